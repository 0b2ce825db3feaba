package shop

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/dtm-labs/client/dtmcli"
	"github.com/dtm-labs/client/dtmgrpc"
	"github.com/go-sql-driver/mysql"
	"google.golang.org/grpc/codes"

	shopv1 "github.com/opencoupon/coupon/examples/shop/proto/shop/v1"
)

// barrierTable is the DTM barrier table inside each service's own database,
// so the barrier row commits or rolls back with the branch's own rows.
const barrierTable = "barrier"

// inBarrier runs fn in one local transaction on db behind the DTM branch
// barrier of the call in ctx: a repeated call, a Cancel whose Try never ran
// (null compensation) and a Try arriving after its Cancel (hanging) all
// commit without running fn. fn gets the global transaction id.
func inBarrier(ctx context.Context, db *sql.DB, fn func(tx *sql.Tx, gid string) error) error {
	bb, err := dtmgrpc.BarrierFromGrpc(ctx)
	if err != nil {
		return errorf(codes.InvalidArgument, shopv1.ErrorReason_MISSING_BARRIER, "branch called without DTM transaction metadata: %v", err)
	}
	bb.DBType = dtmcli.DBTypeMysql
	bb.BarrierTableName = barrierTable
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	return bb.Call(tx, func(tx *sql.Tx) error { return fn(tx, bb.Gid) })
}

func isDuplicate(err error) bool {
	var me *mysql.MySQLError
	return errors.As(err, &me) && me.Number == 1062
}
