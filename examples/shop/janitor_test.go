package shop_test

import (
	"context"
	"database/sql"
	"errors"
	"testing"
	"time"

	"github.com/dtm-labs/client/dtmgrpc"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/opencoupon/coupon/examples/shop"
	shopv1 "github.com/opencoupon/coupon/examples/shop/proto/shop/v1"
	"github.com/opencoupon/coupon/internal/dtmtest"
	"github.com/opencoupon/coupon/internal/janitor"
	"github.com/opencoupon/coupon/internal/testenv"
)

// barrierRows counts the barrier rows of gid in db.
func barrierRows(tb testing.TB, db *sql.DB, gid string) int {
	tb.Helper()
	var n int
	if err := db.QueryRow(`SELECT COUNT(*) FROM barrier WHERE gid = ?`, gid).Scan(&n); err != nil {
		tb.Fatal(err)
	}
	return n
}

// TestBarrierJanitor cleans the shop's two barrier tables after real
// transactions through the shop's own branches: a paid order (succeed), a
// refused one (failed), and a TCC transaction still open, whose payment Try
// ran. A week and a day later the finished ones' rows are gone and the open
// one's stay, so a late duplicate of its Try still changes nothing; past
// the max age they stay while it is open.
func TestBarrierJanitor(t *testing.T) {
	dtm := dtmtest.Start(t)
	e := mustStart(t, dtm.GRPCAddr, unreachable(t))
	ctx := context.Background()
	status := janitor.CoordinatorStatus(dtm.HTTPAddr, nil)

	mustDeposit(t, e, 1, 10000)
	paid, err := e.Orders.CreateOrder(ctx, newOrder("j-paid", 1, 3000))
	if err != nil || paid.GetStatus() != shopv1.Order_PAID {
		t.Fatalf("CreateOrder = %v, %v; want PAID", paid, err)
	}
	refused, err := e.Orders.CreateOrder(ctx, newOrder("j-refused", 1, 1_000_000))
	if err != nil || refused.GetStatus() != shopv1.Order_CANCELLED {
		t.Fatalf("CreateOrder = %v, %v; want CANCELLED", refused, err)
	}
	for _, g := range []string{paid.GetGid(), refused.GetGid()} {
		testenv.Eventually(t, 30*time.Second, "transaction "+g+" finished", func() bool {
			st, err := status(ctx, g)
			return err == nil && (st == janitor.StatusSucceed || st == janitor.StatusFailed)
		})
	}

	// The open transaction: its payment Try has run, then it waits.
	open := "j-open-" + testenv.Unique(t)
	pay := &shopv1.PaymentBranchRequest{OrderNo: "j-open", UserId: 1, Amount: 2000}
	tried, finish := make(chan error, 1), make(chan error)
	done := make(chan error, 1)
	go func() {
		done <- dtmgrpc.TccGlobalTransaction2(dtm.GRPCAddr, open, func(tcc *dtmgrpc.TccGrpc) {
			tcc.WaitResult = true
			tcc.TimeoutToFail = 3600
		}, func(tcc *dtmgrpc.TccGrpc) error {
			err := tcc.CallBranch(pay, e.Addr+shopv1.PaymentService_FreezeTry_FullMethodName,
				e.Addr+shopv1.PaymentService_CaptureConfirm_FullMethodName, e.Addr+shopv1.PaymentService_UnfreezeCancel_FullMethodName, &emptypb.Empty{})
			tried <- err
			if err != nil {
				return err
			}
			return <-finish
		})
	}()
	if err := <-tried; err != nil {
		t.Fatalf("FreezeTry of the open transaction: %v", err)
	}
	defer func() {
		select {
		case finish <- errors.New("test over"):
		default:
		}
	}()
	openRows := barrierRows(t, e.PaymentDB, open)
	if openRows == 0 {
		t.Fatal("the open transaction's Try left no barrier row")
	}
	finishedRows := 0
	for _, db := range []*sql.DB{e.OrderDB, e.PaymentDB} {
		finishedRows += barrierRows(t, db, paid.GetGid()) + barrierRows(t, db, refused.GetGid())
	}

	clean := func(t *testing.T, after time.Duration) janitor.Stats {
		t.Helper()
		j, err := janitor.New(janitor.Config{Coordinator: dtm.HTTPAddr, Batch: 2, Now: func() time.Time { return time.Now().Add(after) }}, e.OrderDB, e.PaymentDB)
		if err != nil {
			t.Fatal(err)
		}
		st, ran, err := shop.CleanBarriers(ctx, e.OrderDB, j)
		if err != nil || !ran {
			t.Fatalf("CleanBarriers = %+v, %v, %v", st, ran, err)
		}
		return st
	}

	t.Run("a week and a day later", func(t *testing.T) {
		st := clean(t, 8*24*time.Hour)
		if st.DeletedFinished != int64(finishedRows) || st.DeletedExpired != 0 || st.Kept != int64(openRows) {
			t.Errorf("stats = %+v; want %d finished rows deleted, %d kept", st, finishedRows, openRows)
		}
		for _, db := range []*sql.DB{e.OrderDB, e.PaymentDB} {
			if n := barrierRows(t, db, paid.GetGid()) + barrierRows(t, db, refused.GetGid()); n != 0 {
				t.Errorf("%d rows of finished transactions left", n)
			}
		}
		if n := barrierRows(t, e.PaymentDB, open); n != openRows {
			t.Errorf("open transaction has %d barrier rows; want %d", n, openRows)
		}
		// A late duplicate of the open transaction's Try: the barrier
		// still absorbs it (without its row the Try would run again and
		// find the payment: Aborted PAYMENT_CONFLICT).
		if _, err := e.Payments.FreezeTry(barrierCtx(ctx, "tcc", open, "01", "try"), pay); err != nil {
			t.Errorf("late duplicate FreezeTry = %v; want OK with nothing changed", err)
		}
		if b, f := mustAccount(t, e, 1); b != 10000-3000-2000 || f != 2000 {
			t.Errorf("account = %d/%d; want %d/2000", b, f, 10000-3000-2000)
		}
	})

	t.Run("past the max age", func(t *testing.T) {
		st := clean(t, 31*24*time.Hour)
		if st.DeletedExpired != 0 || st.KeptPastMaxAge != int64(openRows) || barrierRows(t, e.PaymentDB, open) != openRows {
			t.Errorf("stats = %+v; want the open transaction's %d rows kept past max age", st, openRows)
		}
	})

	// The open transaction still commits normally.
	finish <- nil
	if err := <-done; err != nil {
		t.Fatalf("open transaction: %v", err)
	}
	if b, f := mustAccount(t, e, 1); b != 10000-3000-2000 || f != 0 || paymentStatus(t, e, "j-open") != shopv1.Payment_CAPTURED {
		t.Errorf("account = %d/%d, payment %v; want %d/0 CAPTURED", b, f, paymentStatus(t, e, "j-open"), 10000-3000-2000)
	}
}

// TestCleanBarriersOneAtATime: a shop replica cleans only while it holds
// the advisory lock, so replicas take turns.
func TestCleanBarriersOneAtATime(t *testing.T) {
	e := mustDatabases(t)
	ctx := context.Background()
	j, err := janitor.New(janitor.Config{Coordinator: unreachable(t)}, e.OrderDB, e.PaymentDB)
	if err != nil {
		t.Fatal(err)
	}
	other, err := e.OrderDB.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	var got int
	if err := other.QueryRowContext(ctx, `SELECT GET_LOCK(CONCAT('shop_barrier_janitor:', DATABASE()), 0)`).Scan(&got); err != nil || got != 1 {
		t.Fatalf("take the lock as another replica: %d, %v", got, err)
	}
	if _, ran, err := shop.CleanBarriers(ctx, e.OrderDB, j); err != nil || ran {
		t.Errorf("CleanBarriers while another replica cleans = ran %v, %v; want not run", ran, err)
	}
	if _, err := other.ExecContext(ctx, `DO RELEASE_LOCK(CONCAT('shop_barrier_janitor:', DATABASE()))`); err != nil {
		t.Fatal(err)
	}
	if _, ran, err := shop.CleanBarriers(ctx, e.OrderDB, j); err != nil || !ran {
		t.Errorf("CleanBarriers with the lock free = ran %v, %v; want run", ran, err)
	}
}
