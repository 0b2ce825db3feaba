package tccbench

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/dtm-labs/client/dtmcli"
	"github.com/dtm-labs/client/dtmgrpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// The textbook participant is the TCC TransOut of DTM's own examples
// (dtm-examples busi): each of Try, Confirm and Cancel is one local
// transaction holding the DTM barrier insert and one UPDATE of the user's
// account. The request is the user ID; every transfer moves textbookAmount.
const (
	textbookService = "couponbench.Textbook"
	textbookAmount  = 30
)

// textbookDDL is DTM's barrier table (dtmcli.barrier.mysql.sql) and the
// examples' account table.
var textbookDDL = []string{
	`CREATE TABLE IF NOT EXISTS barrier (
  id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
  trans_type VARCHAR(45) DEFAULT '',
  gid VARCHAR(128) DEFAULT '',
  branch_id VARCHAR(128) DEFAULT '',
  op VARCHAR(45) DEFAULT '',
  barrier_id VARCHAR(45) DEFAULT '',
  reason VARCHAR(45) DEFAULT '' COMMENT 'the branch type who insert this record',
  create_time DATETIME DEFAULT NOW(),
  update_time DATETIME DEFAULT NOW(),
  KEY (create_time),
  KEY (update_time),
  UNIQUE KEY uniq_barrier (gid, branch_id, op, barrier_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4`,
	`CREATE TABLE IF NOT EXISTS user_account (
  id INT NOT NULL AUTO_INCREMENT PRIMARY KEY,
  user_id BIGINT NOT NULL UNIQUE,
  balance DECIMAL(10, 2) NOT NULL DEFAULT '0',
  trading_balance DECIMAL(10, 2) NOT NULL DEFAULT '0',
  create_time DATETIME DEFAULT NOW(),
  update_time DATETIME DEFAULT NOW() ON UPDATE NOW(),
  KEY (create_time),
  KEY (update_time)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4`,
}

// textbook serves the textbook participant on its database.
type textbook struct{ db *sql.DB }

// textbookServer is the service the descriptor below dispatches to.
type textbookServer interface {
	TransOutTry(context.Context, *wrapperspb.Int64Value) (*emptypb.Empty, error)
	TransOutConfirm(context.Context, *wrapperspb.Int64Value) (*emptypb.Empty, error)
	TransOutCancel(context.Context, *wrapperspb.Int64Value) (*emptypb.Empty, error)
}

var _ textbookServer = (*textbook)(nil)

var textbookDesc = grpc.ServiceDesc{
	ServiceName: textbookService,
	HandlerType: (*textbookServer)(nil),
	Methods: []grpc.MethodDesc{
		{MethodName: "TransOutTry", Handler: textbookHandler(textbookServer.TransOutTry)},
		{MethodName: "TransOutConfirm", Handler: textbookHandler(textbookServer.TransOutConfirm)},
		{MethodName: "TransOutCancel", Handler: textbookHandler(textbookServer.TransOutCancel)},
	},
}

type textbookMethod func(textbookServer, context.Context, *wrapperspb.Int64Value) (*emptypb.Empty, error)

func textbookHandler(m textbookMethod) func(any, context.Context, func(any) error, grpc.UnaryServerInterceptor) (any, error) {
	return func(srv any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
		in := new(wrapperspb.Int64Value)
		if err := dec(in); err != nil {
			return nil, err
		}
		return m(srv.(textbookServer), ctx, in)
	}
}

// branch runs one UPDATE behind the barrier; Try refuses (Aborted, so DTM
// rolls back) when it changes no row, as the examples do.
func (t *textbook) branch(ctx context.Context, refuse bool, query string, args ...any) (*emptypb.Empty, error) {
	bb, err := dtmgrpc.BarrierFromGrpc(ctx)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	bb.DBType, bb.BarrierTableName = dtmcli.DBTypeMysql, "barrier"
	err = bb.CallWithDB(t.db, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, query, args...)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n > 0 || !refuse {
			return err
		}
		return status.Error(codes.Aborted, "balance not enough")
	})
	if _, ok := status.FromError(err); err != nil && !ok {
		err = status.Error(codes.Internal, err.Error())
	}
	if err != nil {
		return nil, err
	}
	return &emptypb.Empty{}, nil
}

// TransOutTry moves the amount into trading_balance if the balance allows.
func (t *textbook) TransOutTry(ctx context.Context, in *wrapperspb.Int64Value) (*emptypb.Empty, error) {
	return t.branch(ctx, true, `UPDATE user_account SET trading_balance = trading_balance + ?
 WHERE user_id = ? AND trading_balance + ? + balance >= 0`, -textbookAmount, in.Value, -textbookAmount)
}

// TransOutConfirm takes the amount out of the balance.
func (t *textbook) TransOutConfirm(ctx context.Context, in *wrapperspb.Int64Value) (*emptypb.Empty, error) {
	return t.branch(ctx, false, `UPDATE user_account SET trading_balance = trading_balance - ?, balance = balance + ?
 WHERE user_id = ?`, -textbookAmount, -textbookAmount, in.Value)
}

// TransOutCancel gives the amount back.
func (t *textbook) TransOutCancel(ctx context.Context, in *wrapperspb.Int64Value) (*emptypb.Empty, error) {
	return t.branch(ctx, false, `UPDATE user_account SET trading_balance = trading_balance - ? WHERE user_id = ?`,
		-textbookAmount, in.Value)
}

// startTextbook creates the textbook database and serves the participant.
func (b *bench) startTextbook(ctx context.Context) error {
	if err := b.createDatabase(ctx, dbTextbook); err != nil {
		return err
	}
	db, err := b.openDB(ctx, dbTextbook)
	if err != nil {
		return err
	}
	b.stops = append(b.stops, func() { db.Close() })
	for _, ddl := range textbookDDL {
		if _, err := db.ExecContext(ctx, ddl); err != nil {
			return fmt.Errorf("create textbook tables: %w", err)
		}
	}
	b.textbookDB = db
	gs := grpc.NewServer()
	gs.RegisterService(&textbookDesc, &textbook{db: db})
	b.textURL, err = b.serve(gs)
	return err
}

// textbookScenario opens a funded account for each user base..base+n-1; a
// transaction moves textbookAmount out of item i's account.
func (b *bench) textbookScenario(ctx context.Context, name, short string, base int64) (*scenario, error) {
	n := b.items()
	rows := make([][]any, n)
	for i := range rows {
		rows[i] = []any{base + int64(i), accountBalance}
	}
	if err := insertRows(ctx, b.textbookDB, `INSERT INTO user_account (user_id, balance) VALUES `, rows); err != nil {
		return nil, fmt.Errorf("insert textbook accounts: %w", err)
	}
	url := b.textURL + "/" + textbookService + "/"
	sc := &scenario{name: name, short: short, n: n}
	sc.tx = func(ctx context.Context, gid string, i int) error {
		req := wrapperspb.Int64(base + int64(i))
		return dtmgrpc.TccGlobalTransaction2(b.o.dtm, gid, func(t *dtmgrpc.TccGrpc) { t.Context = ctx }, func(t *dtmgrpc.TccGrpc) error {
			return t.CallBranch(req, url+"TransOutTry", url+"TransOutConfirm", url+"TransOutCancel", &emptypb.Empty{})
		})
	}
	sc.settled = func(ctx context.Context) (func(int) bool, error) {
		done := map[int64]bool{}
		err := queryEach(ctx, b.textbookDB, `SELECT user_id FROM user_account WHERE balance = ? AND trading_balance = 0`,
			[]any{accountBalance - textbookAmount}, func(r *sql.Rows) error {
				var user int64
				err := r.Scan(&user)
				done[user] = true
				return err
			})
		if err != nil {
			return nil, fmt.Errorf("read textbook accounts: %w", err)
		}
		return func(i int) bool { return done[base+int64(i)] }, nil
	}
	return sc, nil
}
