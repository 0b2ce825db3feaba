package reconcile

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/go-sql-driver/mysql"
)

// OpenSource opens a pool for reading a ledger: times come back as text,
// which the sources decode faster than the driver would.
func OpenSource(ctx context.Context, dsn string) (*sql.DB, error) {
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		return nil, fmt.Errorf("parse dsn: %w", err)
	}
	cfg.ParseTime, cfg.InterpolateParams = false, true
	if cfg.Timeout == 0 {
		cfg.Timeout = 5 * time.Second
	}
	conn, err := mysql.NewConnector(cfg)
	if err != nil {
		return nil, err
	}
	db := sql.OpenDB(conn)
	db.SetMaxOpenConns(2)
	db.SetMaxIdleConns(2)
	if err := db.PingContext(ctx); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("mysql %s/%s: %w", cfg.Addr, cfg.DBName, err)
	}
	return db, nil
}

// SourceKey names a set of books for finding the previous run's pending:
// the databases (never their passwords) or a directory of CSV files.
func SourceKey(kind string, names ...string) string {
	if kind == "csv" && len(names) == 1 {
		return truncate("csv:"+names[0], 255)
	}
	h := sha256.New()
	for _, n := range names {
		if cfg, err := mysql.ParseDSN(n); err == nil {
			n = cfg.Addr + "/" + cfg.DBName
		}
		h.Write([]byte(n))
		h.Write([]byte{0})
	}
	return kind + ":" + hex.EncodeToString(h.Sum(nil))[:16]
}

func dbTime(us int64) string { return FromMicros(us).Format("2006-01-02 15:04:05.000000") }

// The shop's ledgers are read by the day's updates, a range over each
// table's idx_updated (examples/shop/sql/*/004_reconcile_index.sql).
const (
	ordersQuery = `SELECT order_no, user_id, status, amount, coupon_code, discount, payable, updated_at
		FROM orders WHERE updated_at >= ? AND created_at < ?`
	paymentsQuery = `SELECT id, order_no, status, amount, updated_at
		FROM payments WHERE updated_at >= ? AND created_at < ?`
)

// MySQLOrders reads the sample shop's orders table. Rows updated since the
// day began and created before it ended are read; the engine sorts out
// those changed after as-of.
type MySQLOrders struct{ DB *sql.DB }

// ReadOrders streams the orders.
func (s MySQLOrders) ReadOrders(ctx context.Context, w Window, emit func(*Order) error) error {
	var o Order
	var no, status, code, at sql.RawBytes
	return stream(ctx, s.DB, ordersQuery, w, func(rows *sql.Rows) error {
		if err := rows.Scan(&no, &o.UserID, &status, &o.Amount, &code, &o.Discount, &o.Payable, &at); err != nil {
			return err
		}
		o.OrderNo, o.CouponCode = str(no), str(code)
		var ok bool
		if o.Status, ok = ParseOrderStatus(str(status)); !ok {
			return fmt.Errorf("order %s: unknown status %q", no, status)
		}
		if o.UpdatedAt, ok = parseDatetime(at); !ok {
			return fmt.Errorf("order %s: bad updated_at %q", no, at)
		}
		return emit(&o)
	})
}

// MySQLPayments reads the sample shop's payments table; its id is the
// payment_id of the contract.
type MySQLPayments struct{ DB *sql.DB }

// ReadPayments streams the payments.
func (s MySQLPayments) ReadPayments(ctx context.Context, w Window, emit func(*Payment) error) error {
	var p Payment
	var id, no, status, at sql.RawBytes
	return stream(ctx, s.DB, paymentsQuery, w, func(rows *sql.Rows) error {
		if err := rows.Scan(&id, &no, &status, &p.Amount, &at); err != nil {
			return err
		}
		p.PaymentID, p.OrderNo = str(id), str(no)
		var ok bool
		if p.Status, ok = ParsePaymentStatus(str(status)); !ok {
			return fmt.Errorf("payment %s: unknown status %q", id, status)
		}
		if p.UpdatedAt, ok = parseDatetime(at); !ok {
			return fmt.Errorf("payment %s: bad updated_at %q", id, at)
		}
		return emit(&p)
	})
}

// MySQLLedger reads coupon_ledger from every coupon shard database, one
// after the other, through its idx_created index.
type MySQLLedger struct{ Shards []*sql.DB }

// ReadLedger streams the day's ledger rows of every shard.
func (s MySQLLedger) ReadLedger(ctx context.Context, w Window, emit func(*Entry) error) error {
	for i, db := range s.Shards {
		if err := readShardLedger(ctx, db, w, emit); err != nil {
			return fmt.Errorf("shard %d: %w", i, err)
		}
	}
	return nil
}

func readShardLedger(ctx context.Context, db *sql.DB, w Window, emit func(*Entry) error) error {
	var e Entry
	var no, code, op, gid, branch, at sql.RawBytes
	return stream(ctx, db, `SELECT order_no, coupon_code, op, discount_amount, user_id, template_id, gid, branch_id, created_at
		FROM coupon_ledger WHERE created_at >= ? AND created_at < ?`, w, func(rows *sql.Rows) error {
		if err := rows.Scan(&no, &code, &op, &e.Discount, &e.UserID, &e.TemplateID, &gid, &branch, &at); err != nil {
			return err
		}
		e.OrderNo, e.CouponCode, e.GID, e.BranchID = str(no), str(code), str(gid), str(branch)
		var ok bool
		if e.Op, ok = ParseOp(str(op)); !ok {
			return fmt.Errorf("ledger row of order %s: unknown op %q", no, op)
		}
		if e.CreatedAt, ok = parseDatetime(at); !ok {
			return fmt.Errorf("ledger row of order %s: bad created_at %q", no, at)
		}
		return emit(&e)
	})
}

// stream runs a query over the window (its two parameters are the day's
// start and end) and calls each for every row.
func stream(ctx context.Context, db *sql.DB, query string, w Window, each func(*sql.Rows) error) error {
	rows, err := db.QueryContext(ctx, query, dbTime(w.Start), dbTime(w.End))
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		if err := each(rows); err != nil {
			return err
		}
	}
	return rows.Err()
}

// parseDatetime reads MySQL's "YYYY-MM-DD HH:MM:SS[.ffffff]" as UTC.
func parseDatetime(b []byte) (int64, bool) {
	if len(b) < 19 || b[10] != ' ' {
		return 0, false
	}
	var buf [40]byte
	n := copy(buf[:], b)
	if n > 38 {
		return 0, false
	}
	buf[10] = 'T'
	buf[n] = 'Z'
	return fastTime(buf[:n+1])
}

// Close closes every pool of the sources that holds one.
func (s Sources) Close() {
	for _, c := range []any{s.Orders, s.Payments, s.Ledger} {
		switch x := c.(type) {
		case MySQLOrders:
			_ = x.DB.Close()
		case MySQLPayments:
			_ = x.DB.Close()
		case MySQLLedger:
			for _, db := range x.Shards {
				_ = db.Close()
			}
		}
	}
}
