package chaos

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/opencoupon/coupon/client/coupontcc"
	shopv1 "github.com/opencoupon/coupon/examples/shop/proto/shop/v1"
	couponv1 "github.com/opencoupon/coupon/proto/coupon/v1"
)

// Scenario is one named way of breaking the stack.
type Scenario struct {
	Name  string
	About string
	load  load
	hot   bool // the run gets a hot template with little stock
	// inject injects the scenario's faults during the workload and heals
	// them; drive runs the scenario's own transactions. Either may be nil.
	inject func(ctx context.Context, r *run) error
	drive  func(ctx context.Context, r *run) error
}

// scaled sizes the op budget for the workload length.
func (l load) scaled(d time.Duration) load {
	l.maxOps = max(l.maxOps*int(d/time.Second), l.maxOps)
	return l
}

var (
	mixed      = load{workers: 4, maxOps: 40, claimPct: 45}
	light      = load{workers: 2, maxOps: 15, claimPct: 50}
	orderHeavy = load{workers: 4, maxOps: 30, claimPct: 20}
	storm      = load{workers: 8, maxOps: 200, claimPct: 95, hotPct: 85}
)

// Scenarios returns every scenario, in the order `all` runs them.
func Scenarios() []*Scenario {
	return []*Scenario{
		{Name: "kill-coupon-try", About: "the coupon service SIGKILLed while Try calls are in flight, then restarted", load: orderHeavy, inject: killCouponDuringTry},
		{Name: "kill-coupon-confirm", About: "the coupon service SIGKILLed while DTM's Confirm calls are in flight, then restarted", load: light, drive: killCouponDuringConfirm},
		{Name: "kill-coordinator", About: "the shop's coordinator SIGKILLed mid-transaction; its twin finishes; it restarts", load: orderHeavy, inject: killCoordinator},
		{Name: "mysql-latency", About: "latency on the coupon shards' connections", load: mixed, inject: onShards("latency", map[string]any{"latency": 300, "jitter": 200}, 2500*time.Millisecond)},
		{Name: "mysql-timeout", About: "the coupon shards' connections stall, then close", load: mixed, inject: onShards("timeout", map[string]any{"timeout": 1500}, 2500*time.Millisecond)},
		{Name: "mysql-reset", About: "the coupon shards' connections reset (TCP RST)", load: mixed, inject: onShards("reset_peer", map[string]any{"timeout": 100}, 2*time.Second)},
		{Name: "mysql-down", About: "the coupon shards unreachable", load: mixed, inject: onShards("down", nil, 2500*time.Millisecond)},
		{Name: "redis-latency", About: "latency on the coupon service's Redis connection", load: mixed, inject: onRedis("latency", map[string]any{"latency": 250, "jitter": 150}, 2500*time.Millisecond)},
		{Name: "redis-stall", About: "Redis answers nothing for longer than the client's 1s read timeout", load: mixed, inject: onRedis("timeout", map[string]any{"timeout": 0}, 2500*time.Millisecond)},
		{Name: "redis-down", About: "Redis unreachable", load: mixed, inject: onRedis("down", nil, 2500*time.Millisecond)},
		{Name: "redis-data-loss", About: "Redis restarted without persistence: counters and request markers gone", load: mixed, inject: redisDataLoss},
		{Name: "partition-coordinator-coupon", About: "the coordinators cannot reach the coupon service, then can", load: light, inject: onProxy(proxyDTMCoupon, "down", nil, 3*time.Second), drive: partitionedTransactions},
		{Name: "branch-disorder", About: "Cancel before Try, Try after Cancel, Confirm twice, foreign gids, sent directly with barrier metadata", load: light, drive: branchDisorder},
		{Name: "two-transactions-one-order", About: "an order service retries an order under a new gid while the first is in flight", load: light, drive: twoTransactionsOneOrder},
		{Name: "submit-retry", About: "an order service resubmits a transaction whose Submit answer it lost", load: light, drive: submitRetry},
		{Name: "hot-storm", About: "a hot-template claim storm while Redis flaps", load: storm, hot: true, inject: redisFlaps},
	}
}

// ScenarioNames lists the scenario names in order.
func ScenarioNames() []string {
	var out []string
	for _, s := range Scenarios() {
		out = append(out, s.Name)
	}
	return out
}

func scenarioByName(name string) *Scenario {
	for _, s := range Scenarios() {
		if s.Name == name {
			return s
		}
	}
	return nil
}

// at waits until frac of the workload has passed.
func (r *run) at(ctx context.Context, frac float64) error {
	return sleep(ctx, time.Until(r.started.Add(time.Duration(frac*float64(r.duration)))))
}

// hold is how long a fault lasts: at least min, longer in long runs.
func (r *run) hold(min time.Duration) time.Duration { return max(min, r.duration/3) }

func onShards(kind string, attrs map[string]any, d time.Duration) func(context.Context, *run) error {
	return func(ctx context.Context, r *run) error {
		var names []string
		for i := range shards {
			names = append(names, fmt.Sprintf("%s%d", proxyShardPrefix, i))
		}
		return r.fault(ctx, 0.3, d, kind, attrs, names...)
	}
}

func onRedis(kind string, attrs map[string]any, d time.Duration) func(context.Context, *run) error {
	return onProxy(proxyRedis, kind, attrs, d)
}

func onProxy(name, kind string, attrs map[string]any, d time.Duration) func(context.Context, *run) error {
	return func(ctx context.Context, r *run) error { return r.fault(ctx, 0.3, d, kind, attrs, name) }
}

// fault applies one fault to proxies at frac of the workload, holds it and heals.
func (r *run) fault(ctx context.Context, frac float64, d time.Duration, kind string, attrs map[string]any, proxies ...string) error {
	if err := r.at(ctx, frac); err != nil {
		return nil
	}
	for _, p := range proxies {
		var err error
		if kind == "down" {
			err = r.s.faults.down(p)
		} else {
			err = r.s.faults.toxic(p, kind, "", attrs)
		}
		if err != nil {
			return err
		}
	}
	_ = sleep(ctx, r.hold(d))
	return r.s.faults.heal(context.WithoutCancel(ctx))
}

// killCoupon SIGKILLs the coupon service and starts it again after down.
func (r *run) killCoupon(ctx context.Context, why string, down time.Duration) error {
	r.s.faults.record(Fault{Target: "coupon", Kind: "SIGKILL " + why})
	r.s.coupon.kill()
	_ = sleep(ctx, down)
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	if err := r.s.restartCoupon(rctx); err != nil {
		return err
	}
	return r.s.faults.heal(rctx)
}

func killCouponDuringTry(ctx context.Context, r *run) error {
	if err := r.at(ctx, 0.3); err != nil {
		return nil
	}
	// Slow shard connections keep Try calls in flight long enough to be cut.
	for i := range shards {
		if err := r.s.faults.toxic(fmt.Sprintf("%s%d", proxyShardPrefix, i), "latency", "upstream", map[string]any{"latency": 150}); err != nil {
			return err
		}
	}
	_ = sleep(ctx, 700*time.Millisecond)
	return r.killCoupon(ctx, "during Try", time.Second)
}

func killCoordinator(ctx context.Context, r *run) error {
	if err := r.at(ctx, 0.3); err != nil {
		return nil
	}
	r.s.faults.record(Fault{Target: "coordinator-0", Kind: "SIGKILL mid-transaction"})
	r.s.coords[0].kill()
	_ = sleep(ctx, r.hold(2*time.Second))
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	if err := r.s.startCoordinator(rctx, 0); err != nil {
		return err
	}
	return r.s.faults.heal(rctx)
}

func redisDataLoss(ctx context.Context, r *run) error {
	if err := r.at(ctx, 0.4); err != nil {
		return nil
	}
	r.s.faults.record(Fault{Target: "redis", Kind: "restart without persistence"})
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	if err := r.s.restartRedis(rctx); err != nil {
		return err
	}
	return r.s.faults.heal(rctx)
}

func redisFlaps(ctx context.Context, r *run) error {
	if err := r.at(ctx, 0.2); err != nil {
		return nil
	}
	end := r.started.Add(r.duration * 8 / 10)
	for time.Now().Before(end) && ctx.Err() == nil {
		if err := r.s.faults.down(proxyRedis); err != nil {
			return err
		}
		_ = sleep(ctx, 400*time.Millisecond)
		if err := r.s.faults.heal(context.WithoutCancel(ctx)); err != nil {
			return err
		}
		_ = sleep(ctx, 800*time.Millisecond)
	}
	return nil
}

// order is a direct transaction's order: a fresh coupon of the run's direct
// template, a user and an amount.
type directOrder struct {
	orderNo string
	user    int64
	code    string
	amount  int64
}

func (r *run) directOrder(ctx context.Context, rng *rand.Rand) (directOrder, error) {
	user := r.users[1+rng.IntN(len(r.users)-1)] // not the poor user
	code, err := r.freshCoupon(ctx, user)
	if err != nil {
		return directOrder{}, err
	}
	return directOrder{orderNo: r.next("d"), user: user, code: code, amount: 2000 + rng.Int64N(8000)}, nil
}

func (o directOrder) branchRequest() *couponv1.CouponBranchRequest {
	return &couponv1.CouponBranchRequest{UserId: o.user, CouponCode: o.code, Order: &couponv1.Order{
		OrderNo: o.orderNo, UserId: o.user, Amount: o.amount, Currency: "CNY", ProductLine: "food",
		Items: []*couponv1.OrderItem{{Sku: "sku-1", ProductLine: "food", Quantity: 1, Amount: o.amount}},
	}}
}

// tryCoupon runs the coupon Try of t: at the coupon service directly, with
// Confirm and Cancel sent by DTM to phase2 (the service, or a proxy to it).
func (r *run) tryCoupon(ctx context.Context, t *tcc, o directOrder, phase2 string) (*couponv1.CouponBranchResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp := new(couponv1.CouponBranchResponse)
	err := t.branch(as(ctx, tokenShop), o.branchRequest(), r.s.couponGRPC, phase2,
		couponv1.CouponService_LockCoupon_FullMethodName, couponv1.CouponService_ConsumeCoupon_FullMethodName,
		couponv1.CouponService_UnlockCoupon_FullMethodName, resp)
	r.rec.ops.Add(1)
	return resp, err
}

// tryPayment runs the shop payment's Try (freeze) of t for what is left to pay.
func (r *run) tryPayment(ctx context.Context, t *tcc, o directOrder, payable int64) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	err := t.branch(ctx, &shopv1.PaymentBranchRequest{OrderNo: o.orderNo, UserId: o.user, Amount: payable}, r.s.shopGRPC, r.s.shopGRPC,
		shopv1.PaymentService_FreezeTry_FullMethodName, shopv1.PaymentService_CaptureConfirm_FullMethodName,
		shopv1.PaymentService_UnfreezeCancel_FullMethodName, &emptypb.Empty{})
	r.rec.ops.Add(1)
	return err
}

// finish submits or aborts t. A lost Abort answer is retried (Abort of a
// transaction still prepared or aborting is idempotent in DTM); Submit is
// sent once, as the DTM client does: whether a lost Submit answer may be
// retried is what the submit-retry scenario examines.
func finish(ctx context.Context, t *tcc, commit bool) error {
	if commit {
		cctx, cancel := context.WithTimeout(ctx, 8*time.Second)
		defer cancel()
		return t.submit(cctx)
	}
	var err error
	for range 3 {
		cctx, cancel := context.WithTimeout(ctx, 8*time.Second)
		err = t.abort(cctx)
		cancel()
		if o, _ := classify(err); o != unknown {
			return err
		}
		_ = sleep(ctx, 300*time.Millisecond)
	}
	return err
}

// partitionedTransactions runs coupon + payment transactions through
// coordinator B whose Confirm and Cancel reach the coupon service through
// the proxy that the scenario cuts.
func partitionedTransactions(ctx context.Context, r *run) error {
	var wg sync.WaitGroup
	errc := make(chan error, 2)
	for w := range 2 {
		rng := r.rng(fmt.Sprintf("partition-%d", w))
		wg.Go(func() {
			until := r.started.Add(r.duration)
			for time.Now().Before(until) && ctx.Err() == nil {
				if err := r.oneDirect(ctx, rng, r.s.coordGRPC[1], r.s.proxyAddr[proxyDTMCoupon], rng.IntN(10) < 7); err != nil {
					errc <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errc)
	return <-errc
}

// oneDirect runs one coupon + payment transaction and records it.
func (r *run) oneDirect(ctx context.Context, rng *rand.Rand, dtm, phase2 string, commit bool) error {
	o, err := r.directOrder(ctx, rng)
	if errors.Is(err, errNoCoupon) {
		return nil // claims failing under the fault: try again
	}
	if err != nil {
		return err
	}
	t, err := newTCC(ctx, dtm, r.prefix+"g-"+o.orderNo, o)
	if err != nil {
		return err
	}
	rec := &txnRec{GID: t.Gid, OrderNo: o.orderNo, UserID: o.user, Coupon: o.code, Amount: o.amount, Payment: true}
	if err := t.prepare(ctx); err != nil {
		if out, _ := classify(err); out != unknown {
			return fmt.Errorf("prepare %s: %w", t.Gid, err)
		}
		rec.Want, rec.Note = "abort", "prepare answer lost"
		r.rec.txn(rec)
		return nil
	}
	r.rec.txn(rec)
	resp, err := r.tryCoupon(ctx, t, o, phase2)
	if err == nil {
		err = r.tryPayment(ctx, t, o, o.amount-resp.GetDiscountAmount())
	}
	rec.Want = "commit"
	if err != nil || !commit {
		rec.Want = "abort"
	}
	_ = finish(ctx, t, rec.Want == "commit")
	return nil
}

func killCouponDuringConfirm(ctx context.Context, r *run) error {
	rng := r.rng("kill-confirm")
	if err := r.at(ctx, 0.2); err != nil {
		return nil
	}
	// Tries first, all done; then every Submit at once, whose Confirms
	// reach the coupon service slowly through the proxy, and the kill.
	type prepared struct {
		t   *tcc
		rec *txnRec
	}
	var ps []prepared
	for range 6 {
		o, err := r.directOrder(ctx, rng)
		if err != nil {
			return err
		}
		t, err := newTCC(ctx, r.s.coordGRPC[1], r.prefix+"g-"+o.orderNo, o)
		if err != nil {
			return err
		}
		rec := &txnRec{GID: t.Gid, OrderNo: o.orderNo, UserID: o.user, Coupon: o.code, Amount: o.amount, Payment: true, Want: "commit"}
		if err := t.prepare(ctx); err != nil {
			return fmt.Errorf("prepare %s: %w", t.Gid, err)
		}
		r.rec.txn(rec)
		resp, err := r.tryCoupon(ctx, t, o, r.s.proxyAddr[proxyDTMCoupon])
		if err == nil {
			err = r.tryPayment(ctx, t, o, o.amount-resp.GetDiscountAmount())
		}
		if err != nil {
			rec.Want = "abort"
			_ = finish(ctx, t, false)
			continue
		}
		ps = append(ps, prepared{t, rec})
	}
	for i := range shards {
		if err := r.s.faults.toxic(fmt.Sprintf("%s%d", proxyShardPrefix, i), "latency", "upstream", map[string]any{"latency": 200}); err != nil {
			return err
		}
	}
	var wg sync.WaitGroup
	for _, p := range ps {
		wg.Go(func() { _ = finish(ctx, p.t, true) })
	}
	_ = sleep(ctx, 300*time.Millisecond)
	err := r.killCoupon(ctx, "during Confirm", time.Second)
	wg.Wait()
	return err
}

// branchCall sends one TCC branch call straight to the coupon service with
// DTM's barrier metadata, as a coordinator (or a forger) would.
func (r *run) branchCall(ctx context.Context, gid, branchID, op string, o directOrder) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(as(ctx, tokenShop), "dtm-gid", gid, "dtm-trans_type", "tcc",
		"dtm-branch_id", branchID, "dtm-op", op, "dtm-dtm", r.s.coordGRPC[1])
	req := o.branchRequest()
	var err error
	switch op {
	case "try":
		_, err = r.s.coupons.LockCoupon(ctx, req)
	case "confirm":
		_, err = r.s.coupons.ConsumeCoupon(ctx, req)
	case "cancel":
		_, err = r.s.coupons.UnlockCoupon(ctx, req)
	}
	r.rec.ops.Add(1)
	return err
}

// disorder is one sequence of branch calls: gid index, op.
type disorder struct {
	name  string
	calls [][2]string // {gid label, op}
	want  map[string]string
}

var disorders = []disorder{
	{"cancel-before-try", [][2]string{{"a", "cancel"}, {"a", "try"}}, map[string]string{"a": "abort"}},
	{"try-cancel-try", [][2]string{{"a", "try"}, {"a", "cancel"}, {"a", "try"}}, map[string]string{"a": "abort"}},
	{"confirm-twice", [][2]string{{"a", "try"}, {"a", "confirm"}, {"a", "confirm"}}, map[string]string{"a": "commit"}},
	{"try-twice-confirm", [][2]string{{"a", "try"}, {"a", "try"}, {"a", "confirm"}}, map[string]string{"a": "commit"}},
	{"cancel-twice", [][2]string{{"a", "try"}, {"a", "cancel"}, {"a", "cancel"}}, map[string]string{"a": "abort"}},
	// A Cancel of another gid, never tried, must not release a's lock.
	{"foreign-cancel", [][2]string{{"a", "try"}, {"b", "cancel"}, {"a", "confirm"}}, map[string]string{"a": "commit", "b": "abort"}},
	// Another gid's Try of the same order must not share a's lock.
	{"foreign-try-same-order", [][2]string{{"a", "try"}, {"b", "try"}, {"b", "cancel"}, {"a", "confirm"}}, map[string]string{"a": "commit", "b": "abort"}},
}

func branchDisorder(ctx context.Context, r *run) error {
	rng := r.rng("disorder")
	rounds := max(1, int(r.duration/(4*time.Second)))
	for range rounds {
		for _, d := range disorders {
			o, err := r.directOrder(ctx, rng)
			if err != nil {
				return err
			}
			gids := map[string]string{}
			for label := range d.want {
				gids[label] = fmt.Sprintf("%sb-%s-%s-%s", r.prefix, d.name, label, o.orderNo)
				r.rec.txn(&txnRec{GID: gids[label], OrderNo: o.orderNo, UserID: o.user, Coupon: o.code, Amount: o.amount, Direct: true, Want: d.want[label], Note: d.name})
			}
			for _, c := range d.calls {
				r.disorderCall(ctx, gids[c[0]], c[1], d.name, o)
			}
		}
		// A Cancel whose payload names another transaction's coupon (a
		// forger, or an order service that mixed up its payloads) gets
		// past the barrier, since its own Try ran: it must leave that
		// lock alone.
		o1, err := r.directOrder(ctx, rng)
		if err != nil {
			return err
		}
		o2, err := r.directOrder(ctx, rng)
		if err != nil {
			return err
		}
		const name = "cancel-names-foreign-coupon"
		ga, gb := fmt.Sprintf("%sb-%s-a-%s", r.prefix, name, o1.orderNo), fmt.Sprintf("%sb-%s-b-%s", r.prefix, name, o2.orderNo)
		r.rec.txn(&txnRec{GID: ga, OrderNo: o1.orderNo, UserID: o1.user, Coupon: o1.code, Amount: o1.amount, Direct: true, Want: "commit", Note: name})
		r.rec.txn(&txnRec{GID: gb, OrderNo: o2.orderNo, UserID: o2.user, Coupon: o2.code, Amount: o2.amount, Direct: true, Want: "commit", Note: name})
		r.disorderCall(ctx, ga, "try", name, o1)
		r.disorderCall(ctx, gb, "try", name, o2)
		r.disorderCall(ctx, gb, "cancel", name, o1)
		r.disorderCall(ctx, gb, "confirm", name, o2)
		r.disorderCall(ctx, ga, "confirm", name, o1)
	}
	return nil
}

// disorderCall sends one branch call of a disorder sequence and records a
// Confirm or Cancel that did not answer OK: they never may refuse, DTM
// would retry them forever.
func (r *run) disorderCall(ctx context.Context, gid, op, name string, o directOrder) {
	err := r.branchCall(ctx, gid, "01", op, o)
	if out, reason := classify(err); op != "try" && err != nil {
		r.rec.mu.Lock()
		r.rec.branchErrs = append(r.rec.branchErrs, fmt.Sprintf("%s: %s %s answered %s %s", gid, name, op, out, reason))
		r.rec.mu.Unlock()
	}
}

// twoTransactionsOneOrder: the order service starts T1 for an order, then,
// believing it lost, starts T2 for the same order under a new gid while T1
// is still in flight. Exactly the transaction that commits may use the coupon.
func twoTransactionsOneOrder(ctx context.Context, r *run) error {
	rng := r.rng("two-gids")
	pairs := max(4, int(r.duration/time.Second))
	for i := range pairs {
		o, err := r.directOrder(ctx, rng)
		if err != nil {
			return err
		}
		dtm := r.s.coordGRPC[1]
		t1, err1 := newTCC(ctx, dtm, r.prefix+"t1-"+o.orderNo, o)
		t2, err2 := newTCC(ctx, dtm, r.prefix+"t2-"+o.orderNo, o)
		if err := errors.Join(err1, err2); err != nil {
			return err
		}
		for _, t := range []*tcc{t1, t2} {
			if err := t.prepare(ctx); err != nil {
				return fmt.Errorf("prepare %s: %w", t.Gid, err)
			}
		}
		rec1 := &txnRec{GID: t1.Gid, OrderNo: o.orderNo, UserID: o.user, Coupon: o.code, Amount: o.amount, Note: "first"}
		rec2 := &txnRec{GID: t2.Gid, OrderNo: o.orderNo, UserID: o.user, Coupon: o.code, Amount: o.amount, Note: "retry under a new gid"}
		r.rec.txn(rec1)
		r.rec.txn(rec2)
		enlist := func(t *tcc) (*couponv1.CouponBranchResponse, error) {
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			r.rec.ops.Add(1)
			return coupontcc.Enlist(coupontcc.WithToken(cctx, tokenShop), t.TccGrpc, r.s.couponGRPC, o.branchRequest())
		}
		if i%2 == 0 {
			// T1 holds coupon and payment; T2 tries the same coupon, its
			// payment conflicts, so it rolls back; then T1 commits.
			resp, err := enlist(t1)
			if err == nil {
				rec1.Payment = true
				err = r.tryPayment(ctx, t1, o, o.amount-resp.GetDiscountAmount())
			}
			resp2, err2 := enlist(t2)
			rec2.Note += "; coupon Try: " + errText(err2)
			if err2 == nil {
				// The order's payment exists under T1: PAYMENT_CONFLICT.
				rec2.Payment = true
				rec2.Note += "; payment Try: " + errText(r.tryPayment(ctx, t2, o, o.amount-resp2.GetDiscountAmount()))
			}
			rec2.Want = "abort"
			_ = finish(ctx, t2, false)
			rec1.Want = map[bool]string{true: "commit", false: "abort"}[err == nil]
			_ = finish(ctx, t1, err == nil)
			continue
		}
		// T1 holds only the coupon; T2 enlists coupon and payment; the
		// order service gives T1 up, then commits T2.
		_, _ = enlist(t1)
		resp2, err2 := enlist(t2)
		if err2 == nil {
			rec2.Payment = true
			err2 = r.tryPayment(ctx, t2, o, o.amount-resp2.GetDiscountAmount())
		}
		rec1.Want = "abort"
		_ = finish(ctx, t1, false)
		rec2.Want = map[bool]string{true: "commit", false: "abort"}[err2 == nil]
		_ = finish(ctx, t2, err2 == nil)
	}
	return nil
}

// submitRetry: the order service's Submit answer is lost (its deadline
// passes while DTM is still confirming, or the Confirm failed), and it
// submits again. In the second half the Confirm cannot reach the coupon
// service at the first Submit.
func submitRetry(ctx context.Context, r *run) error {
	rng := r.rng("submit-retry")
	n := max(3, int(r.duration/(2*time.Second)))
	phase2 := r.s.proxyAddr[proxyDTMCoupon]
	for round, lost := range []string{"answer lost while Confirm is slow", "answer lost while Confirm fails"} {
		for range n {
			o, err := r.directOrder(ctx, rng)
			if err != nil {
				return err
			}
			// Through the client-dtm proxy to coordinator A.
			t, err := newTCC(ctx, r.s.proxyAddr[proxyClientDTM], r.prefix+"r-"+o.orderNo, o)
			if err != nil {
				return err
			}
			rec := &txnRec{GID: t.Gid, OrderNo: o.orderNo, UserID: o.user, Coupon: o.code, Amount: o.amount, Payment: true, Note: lost}
			if err := t.prepare(ctx); err != nil {
				return fmt.Errorf("prepare %s: %w", t.Gid, err)
			}
			r.rec.txn(rec)
			resp, err := r.tryCoupon(ctx, t, o, phase2)
			if err == nil {
				err = r.tryPayment(ctx, t, o, o.amount-resp.GetDiscountAmount())
			}
			if err != nil {
				rec.Want = "abort"
				_ = finish(ctx, t, false)
				continue
			}
			rec.Want = "commit"
			if round == 0 {
				err = r.s.faults.toxic(proxyDTMCoupon, "latency", "upstream", map[string]any{"latency": 1500})
			} else {
				err = r.s.faults.down(proxyDTMCoupon)
			}
			if err != nil {
				return err
			}
			sctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
			first := t.submit(sctx)
			cancel()
			// The order service did not get an answer, so it submits again.
			second := finish(ctx, t, true)
			rec.Note += fmt.Sprintf("; first Submit: %v; second: %v", errText(first), errText(second))
			if err := r.s.faults.heal(context.WithoutCancel(ctx)); err != nil {
				return err
			}
		}
	}
	return nil
}

func errText(err error) string {
	if err == nil {
		return "OK"
	}
	o, reason := classify(err)
	return o.String() + " " + reason
}
