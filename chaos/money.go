package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"google.golang.org/protobuf/types/known/emptypb"

	shopv1 "github.com/opencoupon/coupon/examples/shop/proto/shop/v1"
	"github.com/opencoupon/coupon/internal/ctxtime"
)

// The money-safety scenarios: a Submit resent over every coordinator route,
// the barrier janitor running while a Cancel is held back, and a refund
// while the coupon's Confirm is delayed. Each drives its own transactions
// with the coupon's Confirm and Cancel sent through the dtm-coupon proxy,
// which it cuts.

// submitRoutes are the ways an order service can send a Submit.
var submitRoutes = []string{"grpc", "http", "json-rpc"}

// resubmitEveryRoute: a TCC is submitted while its coupon Confirm cannot
// reach the coupon service, so it stays submitted; the order service,
// without an answer, submits it again over each route DTM serves. No route
// may mark it succeed without the coupon's Confirm: the invariant is that
// no succeeded transaction leaves its coupon LOCKED.
func resubmitEveryRoute(ctx context.Context, r *run) error {
	rng := r.rng("resubmit-routes")
	phase2 := r.s.proxyAddr[proxyDTMCoupon]
	answers := map[string]map[string]int{}
	defer func() {
		for _, route := range submitRoutes {
			r.note(fmt.Sprintf("resubmits over %s answered %s", route, counts(answers[route])))
		}
	}()
	for round := 0; round == 0 || r.workloadLeft(); round++ {
		for _, route := range submitRoutes {
			o, err := r.directOrder(ctx, rng)
			if errors.Is(err, errNoCoupon) {
				continue
			}
			if err != nil {
				return err
			}
			t, err := newTCC(ctx, r.s.coordGRPC[1], r.prefix+"rs-"+route+"-"+o.orderNo, o)
			if err != nil {
				return err
			}
			rec := &txnRec{GID: t.Gid, OrderNo: o.orderNo, UserID: o.user, Coupon: o.code, Amount: o.amount, Payment: true,
				Note: "resubmitted over " + route}
			if err := t.prepare(ctx); err != nil {
				return fmt.Errorf("prepare %s: %w", t.Gid, err)
			}
			r.rec.txn(rec)
			_, err = r.tryCouponAndPayment(ctx, t, o, phase2)
			if err != nil {
				rec.abort(err)
				_ = finish(ctx, t, false)
				continue
			}
			rec.Want = "commit"
			if err := r.s.faults.down(proxyDTMCoupon); err != nil {
				return err
			}
			sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			first := t.submit(sctx)
			cancel()
			st, err := r.s.awaitStatus(ctx, t.Gid, statusSubmitted, 10*time.Second)
			if err != nil {
				return err
			}
			second := r.s.submitOver(ctx, route, t)
			r.rec.ops.Add(1)
			if answers[route] == nil {
				answers[route] = map[string]int{}
			}
			answers[route][errText(second)]++
			rec.Note += fmt.Sprintf("; first Submit: %s (then %s); resubmit: %s", errText(first), st, errText(second))
			if err := r.s.faults.heal(context.WithoutCancel(ctx)); err != nil {
				return err
			}
		}
	}
	return nil
}

// awaitStatus polls gid's DTM status until it is want or timeout passes, and
// returns the last one seen.
func (s *Stack) awaitStatus(ctx context.Context, gid, want string, timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)
	for {
		st, err := s.queryStatus(ctx, gid)
		if err == nil && st == want || time.Now().After(deadline) {
			return st, nil
		}
		if err := ctxtime.Sleep(ctx, 100*time.Millisecond); err != nil {
			return st, err
		}
	}
}

// submitOver sends t's Submit to coordinator B over route: its gRPC API,
// its HTTP API (/api/dtmsvr/submit) or its JSON-RPC API (/api/json-rpc,
// method submit), each with the body an order service would send.
func (s *Stack) submitOver(ctx context.Context, route string, t *tcc) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	body := map[string]any{"gid": t.Gid, "trans_type": "tcc", "wait_result": true, "branch_headers": t.BranchHeaders}
	var url string
	switch route {
	case "grpc":
		return t.submit(ctx)
	case "http":
		url = "http://" + s.coordHTTP[1] + "/api/dtmsvr/submit"
	case "json-rpc":
		url = "http://" + s.coordHTTP[1] + "/api/json-rpc"
		body = map[string]any{"jsonrpc": "2.0", "id": t.Gid, "method": "submit", "params": body}
	default:
		return fmt.Errorf("unknown submit route %q", route)
	}
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := httpClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s submit: HTTP %d: %s", route, resp.StatusCode, bytes.TrimSpace(out))
	}
	if route == "json-rpc" {
		var jr struct {
			Error *struct {
				Code    int    `json:"code"`
				Message string `json:"message"`
			} `json:"error"`
		}
		if json.Unmarshal(out, &jr) == nil && jr.Error != nil {
			return fmt.Errorf("json-rpc submit: %d %s", jr.Error.Code, jr.Error.Message)
		}
	}
	return nil
}

// janitorDuringRetry: the coupon service runs its barrier janitor every
// few hundred milliseconds with a max_age of a second, while a rolled-back
// transaction's coupon Cancel is held back by the proxy for longer than
// that. The janitor must not take away the Try's barrier row the Cancel
// needs: without it the late Cancel looks like a Cancel without a Try, does
// nothing, and the coupon stays LOCKED for good.
func janitorDuringRetry(ctx context.Context, r *run) error {
	rng := r.rng("janitor")
	// First prove the janitor runs: a finished transaction's barrier rows
	// go within a few rounds.
	o, err := r.directOrder(ctx, rng)
	if err != nil {
		return err
	}
	t, err := newTCC(ctx, r.s.coordGRPC[1], r.prefix+"jf-"+o.orderNo, o)
	if err != nil {
		return err
	}
	rec := &txnRec{GID: t.Gid, OrderNo: o.orderNo, UserID: o.user, Coupon: o.code, Amount: o.amount, Payment: true, Note: "proves the janitor runs"}
	if err := t.prepare(ctx); err != nil {
		return fmt.Errorf("prepare %s: %w", t.Gid, err)
	}
	r.rec.txn(rec)
	_, err = r.tryCouponAndPayment(ctx, t, o, r.s.couponGRPC)
	if err != nil {
		rec.abort(err)
		_ = finish(ctx, t, false)
		return fmt.Errorf("the janitor's first transaction did not get its Tries through: %w", err)
	}
	rec.Want = "commit"
	_ = finish(ctx, t, true)
	// Its first round works through every row the run left so far (tens
	// of thousands after a long soak, each looked up at the coordinator),
	// so it is waited for as long as it keeps deleting rows.
	if gone, err := r.s.awaitJanitorFirstRound(ctx, t.Gid); err != nil {
		return err
	} else if !gone {
		return fmt.Errorf("the barrier janitor never deleted the rows of finished transaction %s: no barrier row went for %s (see %s/coupon.log)", t.Gid, janitorStall, r.s.Dir)
	}

	phase2 := r.s.proxyAddr[proxyDTMCoupon]
	held, deleted := 0, 0
	defer func() {
		r.note(fmt.Sprintf("the janitor deleted the Try barrier rows of %d of %d transactions whose Cancel was held back", deleted, held))
	}()
	for i := 0; i < 2 || r.workloadLeft(); i++ {
		o, err := r.directOrder(ctx, rng)
		if errors.Is(err, errNoCoupon) {
			continue
		}
		if err != nil {
			return err
		}
		t, err := newTCC(ctx, r.s.coordGRPC[1], r.prefix+"j-"+o.orderNo, o)
		if err != nil {
			return err
		}
		rec := &txnRec{GID: t.Gid, OrderNo: o.orderNo, UserID: o.user, Coupon: o.code, Amount: o.amount, Payment: true, Note: "Cancel held back"}
		if err := t.prepare(ctx); err != nil {
			return fmt.Errorf("prepare %s: %w", t.Gid, err)
		}
		r.rec.txn(rec)
		_, err = r.tryCouponAndPayment(ctx, t, o, phase2)
		rec.abort(err)
		if err != nil {
			_ = finish(ctx, t, false)
			continue
		}
		// The order service rolls back; DTM's Cancel cannot reach the
		// coupon service and is retried.
		if err := r.s.faults.down(proxyDTMCoupon); err != nil {
			return err
		}
		actx, cancel := context.WithTimeout(ctx, 3*time.Second)
		_ = t.abort(actx)
		cancel()
		gone, err := r.s.awaitBarrierGone(ctx, t.Gid, janitorWait)
		if err != nil {
			return err
		}
		held++
		if gone {
			deleted++
		}
		rec.Note += fmt.Sprintf("; Try's barrier row deleted while the Cancel waited: %v", gone)
		if err := r.s.faults.heal(context.WithoutCancel(ctx)); err != nil {
			return err
		}
	}
	return nil
}

// Janitor settings of the janitor-during-retry scenario's coupon service,
// and how long a row may take to go under them.
const (
	janitorInterval = 300 * time.Millisecond
	janitorMaxAge   = time.Second
	janitorWait     = 3*time.Second + 2*janitorMaxAge
	// janitorStall is how long the janitor's first round after the
	// restart may go without deleting a row before the scenario says it
	// does not run; janitorFirstRound bounds the whole round.
	janitorStall      = time.Minute
	janitorFirstRound = 30 * time.Minute
)

// janitorEnv is the coupon service's environment for janitor-during-retry:
// a janitor that runs all the time with a tiny max_age (it asks the stack's
// coordinator, dtm.http_addr in the config, about transactions).
func (s *Stack) janitorEnv() []string {
	return []string{
		"COUPON_BARRIER_INTERVAL=" + janitorInterval.String(),
		"COUPON_BARRIER_RETENTION=" + janitorMaxAge.String(),
		"COUPON_BARRIER_MAX_AGE=" + janitorMaxAge.String(),
	}
}

// restartCouponWith stops the coupon service gracefully and starts it with
// extra added to its environment; the stack's own (StackOptions.CouponEnv)
// comes last and wins, so a run can override a scenario's settings. A
// killed predecessor's janitor lease is dropped first, so that the new
// process can run the janitor at once.
func (s *Stack) restartCouponWith(ctx context.Context, extra []string) error {
	s.coupon.stop(10 * time.Second)
	s.coupon.env = append(append([]string(nil), extra...), s.couponEnv...)
	if err := s.rdb.Del(ctx, keyPrefix+"lock:job:barrier-janitor").Err(); err != nil {
		return fmt.Errorf("drop the janitor lease: %w", err)
	}
	return s.restartCoupon(ctx)
}

// awaitBarrierGone polls the coupon shards' barrier tables until no row of
// gid's Try is left or timeout passes, and reports whether it went.
// awaitJanitorFirstRound waits until the janitor deleted gid's Try rows,
// for as long as it keeps deleting barrier rows: false when no row went
// for janitorStall, or after janitorFirstRound.
func (s *Stack) awaitJanitorFirstRound(ctx context.Context, gid string) (bool, error) {
	end := time.Now().Add(janitorFirstRound)
	last, err := s.barrierRows(ctx)
	if err != nil {
		return false, err
	}
	for time.Now().Before(end) {
		gone, err := s.awaitBarrierGone(ctx, gid, janitorStall)
		if gone || err != nil {
			return gone, err
		}
		n, err := s.barrierRows(ctx)
		if err != nil {
			return false, err
		}
		if n >= last {
			return false, nil
		}
		last = n
	}
	return false, nil
}

// barrierRows counts the rows of every shard's barrier table.
func (s *Stack) barrierRows(ctx context.Context) (int, error) {
	total := 0
	for i := range shards {
		var c int
		if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM `+shardName(i)+`.barrier`).Scan(&c); err != nil {
			return 0, fmt.Errorf("count barrier rows: %w", err)
		}
		total += c
	}
	return total, nil
}

func (s *Stack) awaitBarrierGone(ctx context.Context, gid string, timeout time.Duration) (bool, error) {
	deadline := time.Now().Add(timeout)
	for {
		n := 0
		for i := range shards {
			var c int
			if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM `+shardName(i)+`.barrier WHERE gid = ? AND op = 'try'`, gid).Scan(&c); err != nil {
				return false, fmt.Errorf("read barrier rows of %s: %w", gid, err)
			}
			n += c
		}
		if n == 0 {
			return true, nil
		}
		if time.Now().After(deadline) {
			return false, nil
		}
		if err := ctxtime.Sleep(ctx, 100*time.Millisecond); err != nil {
			return false, err
		}
	}
}

// refundBeforeConfirm: an order's transaction commits while the coupon's
// Confirm is held back by the proxy; the order service's own Confirm makes
// the order PAID first (Confirms run in reverse order of registration), and
// the shop refunds it before the coupon is consumed. The coupon must end
// RETURNED — AVAILABLE again with a RETURN ledger row after its CONSUME —
// not USED by a refunded order (invariant 2's refund check).
func refundBeforeConfirm(ctx context.Context, r *run) error {
	rng := r.rng("refund")
	phase2 := r.s.proxyAddr[proxyDTMCoupon]
	refunds := map[string]int{}
	defer func() { r.note("refunds before the coupon's Confirm answered " + counts(refunds)) }()
	for i := 0; i < 2 || r.workloadLeft(); i++ {
		o, err := r.directOrder(ctx, rng)
		if errors.Is(err, errNoCoupon) {
			continue
		}
		if err != nil {
			return err
		}
		gid := r.prefix + "rf-" + o.orderNo
		if err := r.s.insertOrder(ctx, o, gid); err != nil {
			return err
		}
		t, err := newTCC(ctx, r.s.coordGRPC[1], gid, o)
		if err != nil {
			return err
		}
		if err := t.prepare(ctx); err != nil {
			return fmt.Errorf("prepare %s: %w", t.Gid, err)
		}
		resp, err := r.tryCouponAndPayment(ctx, t, o, phase2)
		if err == nil {
			err = r.tryOrder(ctx, t, o, resp.GetDiscountAmount())
		}
		if err != nil {
			_ = finish(ctx, t, false)
			continue
		}
		if err := r.s.faults.down(proxyDTMCoupon); err != nil {
			return err
		}
		sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_ = t.submit(sctx)
		cancel()
		if err := r.s.awaitOrder(ctx, o.orderNo, "PAID", 10*time.Second); err != nil {
			return err
		}
		rctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		_, err = r.s.orders.RefundOrder(as(rctx, tokenShop), &shopv1.RefundOrderRequest{OrderNo: o.orderNo, Reason: "chaos: refund before the coupon's Confirm"})
		cancel()
		r.rec.ops.Add(1)
		refunds[errText(err)]++
		if o, _ := classify(err); o == refused {
			return fmt.Errorf("refund of PAID order %s refused: %w", gid, err)
		}
		if err := r.s.faults.heal(context.WithoutCancel(ctx)); err != nil {
			return err
		}
	}
	return nil
}

// insertOrder writes the shop's order row as its CreateOrder does, PENDING
// for transaction gid, so that the scenario can drive the order's
// transaction itself with the shop's order branch in it.
func (s *Stack) insertOrder(ctx context.Context, o directOrder, gid string) error {
	items := fmt.Sprintf(`[{"sku":"sku-1","product_line":"food","quantity":1,"amount":%d}]`, o.amount)
	_, err := s.db.ExecContext(ctx, `INSERT INTO `+dbOrder+`.orders (order_no, user_id, amount, currency, product_line, items, coupon_code, mode, discount, payable, gid, status, created_at, updated_at)
		VALUES (?, ?, ?, 'CNY', 'food', ?, ?, 'tcc', 0, ?, ?, 'PENDING', UTC_TIMESTAMP(6), UTC_TIMESTAMP(6))`,
		o.orderNo, o.user, o.amount, items, o.code, o.amount, gid)
	if err != nil {
		return fmt.Errorf("insert order %s: %w", o.orderNo, err)
	}
	return nil
}

// tryOrder registers the shop's order branch in t and runs its Try.
func (r *run) tryOrder(ctx context.Context, t *tcc, o directOrder, discount int64) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	err := t.branch(ctx, &shopv1.OrderBranchRequest{OrderNo: o.orderNo, DiscountAmount: discount, PayableAmount: o.amount - discount},
		r.s.shopGRPC, r.s.shopGRPC, shopv1.OrderService_OrderTry_FullMethodName, shopv1.OrderService_OrderConfirm_FullMethodName,
		shopv1.OrderService_OrderCancel_FullMethodName, &emptypb.Empty{})
	r.rec.ops.Add(1)
	return err
}

// awaitOrder polls the order's status until it is want.
func (s *Stack) awaitOrder(ctx context.Context, orderNo, want string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		var st string
		err := s.db.QueryRowContext(ctx, `SELECT status FROM `+dbOrder+`.orders WHERE order_no = ?`, orderNo).Scan(&st)
		if err == nil && st == want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("order %s is %s, not %s, %s after its Submit (err %v)", orderNo, st, want, timeout, err)
		}
		if err := ctxtime.Sleep(ctx, 100*time.Millisecond); err != nil {
			return err
		}
	}
}

// workloadLeft reports whether the scenario's workload window is still open:
// the scenarios' own transactions run as long as the load does.
func (r *run) workloadLeft() bool { return time.Now().Before(r.started.Add(r.duration)) }

// note adds a line to the scenario's report.
func (r *run) note(s string) {
	r.rec.mu.Lock()
	r.rec.notes = append(r.rec.notes, s)
	r.rec.mu.Unlock()
}
