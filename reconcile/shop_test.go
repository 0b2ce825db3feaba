package reconcile_test

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/dtm-labs/client/dtmgrpc"
	"github.com/dtm-labs/logger"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/opencoupon/coupon/client/coupontcc"
	"github.com/opencoupon/coupon/examples/shop"
	shopv1 "github.com/opencoupon/coupon/examples/shop/proto/shop/v1"
	"github.com/opencoupon/coupon/internal/coupontest"
	"github.com/opencoupon/coupon/internal/dtmtest"
	"github.com/opencoupon/coupon/internal/testenv"
	couponv1 "github.com/opencoupon/coupon/proto/coupon/v1"
	"github.com/opencoupon/coupon/reconcile"
)

func TestMain(m *testing.M) {
	logger.InitLog("fatal")
	os.Exit(m.Run())
}

// shopEnv is the sample shop on a free port over two fresh databases.
type shopEnv struct {
	orderDSN, paymentDSN string
	orders               shopv1.OrderServiceClient
	payments             shopv1.PaymentServiceClient
}

func startShop(tb testing.TB, dtm, coupon string) *shopEnv {
	tb.Helper()
	ctx := context.Background()
	name := testenv.Unique(tb)
	e := &shopEnv{orderDSN: testenv.MustDatabase(tb, name+"_order"), paymentDSN: testenv.MustDatabase(tb, name+"_payment")}
	var dbs []*sql.DB
	for _, d := range []struct{ dsn, role string }{{e.orderDSN, shop.OrderDB}, {e.paymentDSN, shop.PaymentDB}} {
		if err := shop.Migrate(ctx, d.dsn, d.role); err != nil {
			tb.Fatal(err)
		}
		db, err := shop.Open(ctx, d.dsn, 4)
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { _ = db.Close() })
		dbs = append(dbs, db)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	log := slog.New(slog.NewJSONHandler(io.Discard, nil))
	orders := shop.NewOrderServer(dbs[0], shop.OrderConfig{DTM: dtm, Coupon: coupon, Token: coupontest.TokenShop, Branch: coupontest.Signer(), Payment: lis.Addr().String(), Self: lis.Addr().String(), Timeout: 5 * time.Second}, log)
	gs := shop.NewGRPCServer(log, orders, shop.NewPaymentServer(dbs[1]))
	go func() { _ = gs.Serve(lis) }()
	tb.Cleanup(gs.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = conn.Close() })
	e.orders, e.payments = shopv1.NewOrderServiceClient(conn), shopv1.NewPaymentServiceClient(conn)
	return e
}

// stack is a coordinator, a coupon service with a template, and the shop.
type stack struct {
	dtm     *dtmtest.Coordinator
	coupons *coupontest.Server
	shop    *shopEnv
	tpl     int64
	state   *sql.DB
}

func startStack(t *testing.T) *stack {
	t.Helper()
	s := &stack{dtm: dtmtest.Start(t), coupons: coupontest.Start(t)}
	s.shop = startShop(t, s.dtm.GRPCAddr, s.coupons.Addr)
	ctx := context.Background()
	now := time.Now()
	camp, err := s.coupons.Admin.CreateCampaign(ctx, &couponv1.CreateCampaignRequest{
		Name: "reconcile", CampaignType: "PROMOTION", CreatedBy: "alice",
		StartTime: timestamppb.New(now.Add(-time.Hour)), EndTime: timestamppb.New(now.Add(24 * time.Hour)),
	})
	if err != nil {
		t.Fatalf("CreateCampaign: %v", err)
	}
	tpl, err := s.coupons.Admin.CreateTemplate(ctx, &couponv1.CreateTemplateRequest{
		CampaignId: camp.GetId(), Name: "10 off 50", CouponType: couponv1.CouponTemplate_FIXED_AMOUNT,
		DiscountAmount: 1000, MinOrderAmount: 5000, TotalStock: 100,
		ValidFrom: timestamppb.New(now.Add(-time.Minute)), ValidUntil: timestamppb.New(now.Add(48 * time.Hour)), CreatedBy: "alice",
	})
	if err != nil {
		t.Fatalf("CreateTemplate: %v", err)
	}
	if _, err := s.coupons.AdminAs(coupontest.TokenBob).ApproveTemplate(ctx, &couponv1.ApproveTemplateRequest{TemplateId: tpl.GetId(), ApprovedBy: "bob"}); err != nil {
		t.Fatalf("ApproveTemplate: %v", err)
	}
	s.tpl = tpl.GetId()
	if s.state, err = reconcile.OpenState(ctx, testenv.MustDatabase(t, testenv.Unique(t)+"_state")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.state.Close() })
	return s
}

func (s *stack) claim(t *testing.T, user int64) string {
	t.Helper()
	c, err := s.coupons.Coupons.ClaimCoupon(context.Background(), &couponv1.ClaimCouponRequest{RequestId: fmt.Sprintf("%s-%d", t.Name(), user), UserId: user, TemplateId: s.tpl})
	if err != nil {
		t.Fatalf("ClaimCoupon(%d): %v", user, err)
	}
	return c.GetCode()
}

func (s *stack) coupon(t *testing.T, user int64, code string) *couponv1.Coupon {
	t.Helper()
	c, err := s.coupons.Coupons.GetCoupon(context.Background(), &couponv1.GetCouponRequest{UserId: user, CouponCode: code})
	if err != nil {
		t.Fatalf("GetCoupon: %v", err)
	}
	return c
}

func (s *stack) order(t *testing.T, no string, user, deposit, amount int64, code string) *shopv1.Order {
	t.Helper()
	ctx := context.Background()
	if deposit > 0 {
		if _, err := s.shop.payments.Deposit(ctx, &shopv1.DepositRequest{UserId: user, Amount: deposit}); err != nil {
			t.Fatalf("Deposit: %v", err)
		}
	}
	o, err := s.shop.orders.CreateOrder(ctx, &shopv1.CreateOrderRequest{OrderNo: no, UserId: user, Amount: amount, Currency: "CNY", ProductLine: "food", CouponCode: code})
	if err != nil {
		t.Fatalf("CreateOrder: %v", err)
	}
	return o
}

// sources opens the MySQL sources over the shop and the coupon shards.
func (s *stack) sources(t *testing.T) reconcile.Sources {
	t.Helper()
	ctx := context.Background()
	open := func(dsn string) *sql.DB {
		db, err := reconcile.OpenSource(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = db.Close() })
		return db
	}
	var shards []*sql.DB
	for _, dsn := range s.coupons.Config.MySQL.ShardDSNs {
		shards = append(shards, open(dsn))
	}
	return reconcile.Sources{
		Orders: reconcile.MySQLOrders{DB: open(s.shop.orderDSN)}, Payments: reconcile.MySQLPayments{DB: open(s.shop.paymentDSN)},
		Ledger: reconcile.MySQLLedger{Shards: shards},
	}
}

type jobRun struct {
	res   *reconcile.JobResult
	items []reconcile.RepairItem
}

func (s *stack) jobWith(t *testing.T, asOf time.Time, rp *reconcile.Repairer) jobRun {
	t.Helper()
	res, _, items := s.job(t, asOf, rp)
	return jobRun{res, items}
}

// job is a run of today as of asOf, with a grace of 10ms so that what the
// test just did is judged.
func (s *stack) job(t *testing.T, asOf time.Time, rp *reconcile.Repairer) (*reconcile.JobResult, []reconcile.Finding, []reconcile.RepairItem) {
	t.Helper()
	y, m, d := asOf.UTC().Date()
	out := filepath.Join(t.TempDir(), "out")
	var report bytes.Buffer
	j := reconcile.Job{
		Options: reconcile.Options{Date: time.Date(y, m, d, 0, 0, 0, 0, time.UTC), AsOf: asOf, Grace: 10 * time.Millisecond, PendingDays: 3, SpillDir: t.TempDir(), Partitions: 8},
		Sources: s.sources(t), SourceKey: "mysql:test-" + t.Name(), Out: out, State: s.state, Repair: rp, Report: &report,
	}
	res, err := j.Run(context.Background())
	if err != nil {
		t.Fatalf("job: %v", err)
	}
	b, err := os.ReadFile(filepath.Join(out, reconcile.FileDiscrepancies))
	if err != nil {
		t.Fatal(err)
	}
	var items []reconcile.RepairItem
	if rp != nil {
		r, err := os.ReadFile(filepath.Join(out, reconcile.FileRepairs))
		if err != nil {
			t.Fatal(err)
		}
		items = decodeLines[reconcile.RepairItem](t, r)
	}
	t.Logf("repairs:\n%s", report.String())
	return res, decodeLines[reconcile.Finding](t, b), items
}

// asOf is a moment just after what the test did (past the job's grace),
// inside today (UTC).
func asOf(t *testing.T) time.Time {
	t.Helper()
	now := time.Now().UTC()
	end := time.Date(now.Year(), now.Month(), now.Day()+1, 0, 0, 0, 0, time.UTC)
	if end.Sub(now) < time.Minute {
		t.Skip("too close to midnight UTC: the test's records would straddle two days")
	}
	return now.Add(20 * time.Millisecond)
}

// TestShopLedgersAndOrphanRepair drives the sample shop through the demo's
// orders and expects its MySQL ledgers to reconcile clean; then it makes
// two orphan locks, one by killing a coordinator after a successful Try,
// one by a Try under a transaction DTM failed, repairs them through the
// coupon service's Cancel, checks a late Try cannot lock again while a new
// order can use the coupon, and that a second run reports them resolved
// and repairs nothing twice.
func TestShopLedgersAndOrphanRepair(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a coordinator, a coupon service and the shop")
	}
	s := startStack(t)
	ctx := context.Background()

	// The demo's orders: paid with the coupon, payment refused (coupon
	// released), amount below the coupon's threshold; and one without coupon.
	if o := s.order(t, "demo-1", 1001, 10000, 8000, s.claim(t, 1001)); o.GetStatus() != shopv1.Order_PAID {
		t.Fatalf("demo-1 = %v; want PAID", o)
	}
	if o := s.order(t, "demo-2", 1002, 0, 8000, s.claim(t, 1002)); o.GetStatus() != shopv1.Order_CANCELLED {
		t.Fatalf("demo-2 = %v; want CANCELLED", o)
	}
	if o := s.order(t, "demo-3", 1003, 10000, 3000, s.claim(t, 1003)); o.GetStatus() != shopv1.Order_CANCELLED {
		t.Fatalf("demo-3 = %v; want CANCELLED", o)
	}
	if o := s.order(t, "demo-4", 1004, 10000, 2000, ""); o.GetStatus() != shopv1.Order_PAID {
		t.Fatalf("demo-4 = %v; want PAID", o)
	}
	res, findings, _ := s.job(t, asOf(t), nil)
	if len(findings) != 0 || res.Pending != 0 || res.Rows.Ledger == 0 {
		t.Fatalf("demo: %d findings %+v, %d pending, %d ledger rows; want a clean run of the ledger", len(findings), findings, res.Pending, res.Rows.Ledger)
	}

	// Orphan 1: the Try succeeds, then the coordinator dies before Submit
	// and its store is lost; the coordinator we ask has never heard of it.
	codeA := s.claim(t, 1005)
	lost := dtmtest.Start(t)
	gidA := "orphan-a-" + testenv.Unique(t)
	err := dtmgrpc.TccGlobalTransaction2(lost.GRPCAddr, gidA, func(tcc *dtmgrpc.TccGrpc) {
		tcc.BranchHeaders = coupontest.BranchHeaders(t, gidA, coupontcc.OrderOf(branchReq(1005, codeA, "orphan-a")))
	}, func(tcc *dtmgrpc.TccGrpc) error {
		if _, err := coupontcc.Enlist(coupontest.AsShop(ctx), tcc, s.coupons.Addr, branchReq(1005, codeA, "orphan-a")); err != nil {
			return err
		}
		lost.Kill()
		return nil
	})
	if err == nil {
		t.Fatal("the transaction committed; want its Submit to fail with the coordinator dead")
	}
	// Orphan 2: a Try under a transaction that DTM failed without knowing the branch.
	codeF := s.claim(t, 1006)
	gidF := "orphan-f-" + testenv.Unique(t)
	_ = dtmgrpc.TccGlobalTransaction(s.dtm.GRPCAddr, gidF, func(*dtmgrpc.TccGrpc) error {
		return errors.New("give up")
	})
	dtm := reconcile.DTMHTTP{Addr: s.dtm.HTTPAddr}
	testenv.Eventually(t, 10*time.Second, "DTM fails "+gidF, func() bool {
		st, err := dtm.Status(ctx, gidF)
		return err == nil && st == reconcile.DTMFailed
	})
	if _, err := s.coupons.Coupons.LockCoupon(barrierCtx(ctx, gidF, "try"), branchReq(1006, codeF, "orphan-f")); err != nil {
		t.Fatalf("LockCoupon under %s: %v", gidF, err)
	}
	for _, c := range []struct {
		user int64
		code string
	}{{1005, codeA}, {1006, codeF}} {
		if st := s.coupon(t, c.user, c.code).GetStatus(); st != couponv1.Coupon_LOCKED {
			t.Fatalf("coupon %s is %v; want LOCKED", c.code, st)
		}
	}
	if st, err := dtm.Status(ctx, gidA); err != nil || st != reconcile.DTMUnknown {
		t.Fatalf("DTM status of %s = %q, %v; want unknown", gidA, st, err)
	}

	conn, err := grpc.NewClient(s.coupons.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	repairer := func(apply bool, now time.Time) *reconcile.Repairer {
		return &reconcile.Repairer{
			State: s.state, DTM: dtm, Coupons: reconcile.CouponGRPC{Conn: conn, DTM: s.dtm.GRPCAddr, Token: coupontest.TokenShop},
			TimeoutToFail: 20 * time.Second, Grace: time.Second, Apply: apply, Now: func() time.Time { return now },
		}
	}
	lockedAsOf := asOf(t)
	wantOrphans := map[key]bool{{reconcile.ClassOrphanLock, "orphan-a", codeA}: true, {reconcile.ClassOrphanLock, "orphan-f", codeF}: true}

	// Right away the lost transaction is too young to call dead.
	_, findings, items := s.job(t, lockedAsOf, repairer(false, time.Now()))
	if d := diffSets(keys(findings), wantOrphans); d != "" {
		t.Fatalf("findings differ (+got -want):\n%s", d)
	}
	wantStatus := map[string]string{"orphan-a": reconcile.RepairWait, "orphan-f": reconcile.RepairPlanned}
	checkItems(t, items, wantStatus)

	// An hour later both are safe to release; a dry run changes nothing.
	later := time.Now().Add(time.Hour)
	_, _, items = s.job(t, lockedAsOf, repairer(false, later))
	checkItems(t, items, map[string]string{"orphan-a": reconcile.RepairPlanned, "orphan-f": reconcile.RepairPlanned})
	if st := s.coupon(t, 1005, codeA).GetStatus(); st != couponv1.Coupon_LOCKED {
		t.Fatalf("after the dry run coupon is %v; want LOCKED", st)
	}

	// Without the shop's token the service refuses: recorded as failed,
	// retried by the next run.
	anon := repairer(true, later)
	anon.Coupons = reconcile.CouponGRPC{Conn: conn, DTM: s.dtm.GRPCAddr}
	j := s.jobWith(t, lockedAsOf, anon)
	checkItems(t, j.items, map[string]string{"orphan-a": reconcile.RepairFailed, "orphan-f": reconcile.RepairFailed})
	if j.res.RepairErr == nil {
		t.Error("failed repairs did not make the run report an error")
	}

	_, _, items = s.job(t, lockedAsOf, repairer(true, later))
	checkItems(t, items, map[string]string{"orphan-a": reconcile.RepairApplied, "orphan-f": reconcile.RepairApplied})
	for _, c := range []struct {
		user int64
		code string
	}{{1005, codeA}, {1006, codeF}} {
		if st := s.coupon(t, c.user, c.code).GetStatus(); st != couponv1.Coupon_AVAILABLE {
			t.Errorf("after the repair coupon %s is %v; want AVAILABLE", c.code, st)
		}
	}

	// The barrier saw the Cancel: a late Try of the lost branch cannot lock.
	_, err = s.coupons.Coupons.LockCoupon(barrierCtx(ctx, gidA, "try"), branchReq(1005, codeA, "orphan-a"))
	if status.Code(err) != codes.Aborted {
		t.Errorf("late Try of %s: %v; want Aborted", gidA, err)
	}
	if st := s.coupon(t, 1005, codeA).GetStatus(); st != couponv1.Coupon_AVAILABLE {
		t.Errorf("after the late Try coupon is %v; want AVAILABLE", st)
	}
	// A new order can use the coupon.
	if o := s.order(t, "after-repair", 1005, 10000, 8000, codeA); o.GetStatus() != shopv1.Order_PAID || o.GetDiscountAmount() != 1000 {
		t.Fatalf("new order with the repaired coupon = %v; want PAID with discount 1000", o)
	}

	// Judged at the same as-of, the orphans are still there but resolved,
	// and nothing is repaired twice.
	res, findings, items = s.job(t, lockedAsOf, repairer(true, later))
	if len(findings) != 2 || res.Open != 0 || res.Resolved != 2 || len(items) != 0 {
		t.Errorf("rerun: %d findings, %d open, %d resolved, repair items %+v; want 2 resolved, nothing to repair", len(findings), res.Open, res.Resolved, items)
	}
	for _, f := range findings {
		if f.Resolution == "" {
			t.Errorf("finding %+v is not marked resolved", f)
		}
	}
	// Judged now, with the releases and the new order in the window: clean,
	// with the two repairs listed as resolved.
	res, findings, _ = s.job(t, asOf(t), repairer(true, later))
	if len(findings) != 0 || len(res.Repaired) != 2 {
		t.Errorf("after repair: findings %+v, repaired %+v; want none and 2", findings, res.Repaired)
	}
	for _, gid := range []string{gidA, gidF} {
		if n := s.ledgerCount(t, gid, "RELEASE"); n != 1 {
			t.Errorf("%d RELEASE rows for %s; want exactly 1", n, gid)
		}
	}
	runs, _, err := reconcile.ListRuns(ctx, s.state, reconcile.Page{Size: 3})
	if err != nil || len(runs) != 3 || runs[0].Status != reconcile.RunDone || runs[0].ID <= runs[1].ID {
		t.Errorf("ListRuns = %+v, %v; want the 3 latest runs, done, newest first", runs, err)
	}
}

func branchReq(user int64, code, orderNo string) *couponv1.CouponBranchRequest {
	return &couponv1.CouponBranchRequest{UserId: user, CouponCode: code, Order: &couponv1.Order{OrderNo: orderNo, UserId: user, Amount: 8000, Currency: "CNY", ProductLine: "food"}}
}

// barrierCtx carries DTM's barrier metadata for branch 01 of gid.
func barrierCtx(ctx context.Context, gid, op string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "dtm-gid", gid, "dtm-trans_type", "tcc", "dtm-branch_id", "01", "dtm-op", op, "dtm-dtm", "127.0.0.1:1")
}

func checkItems(t *testing.T, items []reconcile.RepairItem, want map[string]string) {
	t.Helper()
	got := map[string]string{}
	for _, it := range items {
		got[it.OrderNo] = it.Status
	}
	if len(got) != len(want) {
		t.Errorf("repair items %+v; want %v", items, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("repair of %s: %q; want %q (items %+v)", k, got[k], v, items)
		}
	}
}

func (s *stack) ledgerCount(t *testing.T, gid, op string) int {
	t.Helper()
	total := 0
	for _, dsn := range s.coupons.Config.MySQL.ShardDSNs {
		db, err := sql.Open("mysql", dsn)
		if err != nil {
			t.Fatal(err)
		}
		var n int
		err = db.QueryRow(`SELECT COUNT(*) FROM coupon_ledger WHERE gid = ? AND op = ?`, gid, op).Scan(&n)
		db.Close()
		if err != nil {
			t.Fatal(err)
		}
		total += n
	}
	return total
}

// TestShopReadsUseUpdatedIndex: the nightly read of the shop's orders and
// payments is a range over the day's updates, not a scan of every order
// ever placed (3,000 days of rows, one day read).
func TestShopReadsUseUpdatedIndex(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		role, table, query, insert string
	}{
		{shop.OrderDB, "orders", reconcile.OrdersQuery, `INSERT INTO orders (order_no, user_id, amount, currency, items, payable, gid, created_at, updated_at)
			SELECT CONCAT('o', seq), seq, 100, 'CNY', '[]', 100, CONCAT('g', seq), NOW(6) - INTERVAL seq DAY, NOW(6) - INTERVAL seq DAY FROM seq_1_to_3000`},
		{shop.PaymentDB, "payments", reconcile.PaymentsQuery, `INSERT INTO payments (order_no, gid, user_id, amount, status, created_at, updated_at)
			SELECT CONCAT('o', seq), CONCAT('g', seq), seq, 100, 'CAPTURED', NOW(6) - INTERVAL seq DAY, NOW(6) - INTERVAL seq DAY FROM seq_1_to_3000`},
	} {
		t.Run(tc.table, func(t *testing.T) {
			dsn := testenv.MustDatabase(t, testenv.Unique(t)+"_"+tc.role)
			if err := shop.Migrate(ctx, dsn, tc.role); err != nil {
				t.Fatal(err)
			}
			db, err := sql.Open("mysql", dsn)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			if _, err := db.ExecContext(ctx, tc.insert); err != nil {
				t.Fatal(err)
			}
			if _, err := db.ExecContext(ctx, "ANALYZE TABLE "+tc.table); err != nil {
				t.Fatal(err)
			}
			day := time.Now().UTC().AddDate(0, 0, -10).Truncate(24 * time.Hour)
			var (
				id                                int
				selectType, table, typ, keys, key sql.NullString
				keyLen, ref, rows, extra          sql.NullString
			)
			err = db.QueryRowContext(ctx, "EXPLAIN "+tc.query, day, day.Add(24*time.Hour)).
				Scan(&id, &selectType, &table, &typ, &keys, &key, &keyLen, &ref, &rows, &extra)
			if err != nil {
				t.Fatal(err)
			}
			if key.String != "idx_updated" || typ.String != "range" {
				t.Errorf("EXPLAIN %s: key %q, type %s, rows %s; want a range over idx_updated", tc.table, key.String, typ.String, rows.String)
			}
		})
	}
}
