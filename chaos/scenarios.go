package chaos

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/opencoupon/coupon/client/coupontcc"
	shopv1 "github.com/opencoupon/coupon/examples/shop/proto/shop/v1"
	"github.com/opencoupon/coupon/internal/ctxtime"
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
	// couponEnv, if set, is added to the coupon service's environment for
	// this scenario: it is restarted with it first and without it after.
	couponEnv func(s *Stack) []string
	// noFile, if set with couponEnv, is the coupon service's
	// RLIMIT_NOFILE while the scenario runs.
	noFile uint64
	// edge: the scenario checks invariant 8 (connection-flood).
	edge bool
}

// The load profiles: callers and mix. The storm's callers are the most;
// --callers N scales every profile so that the storm gets N.
var (
	mixed      = load{workers: 4, claimPct: 45}
	light      = load{workers: 2, claimPct: 50}
	orderHeavy = load{workers: 4, claimPct: 20}
	storm      = load{workers: 8, claimPct: 95, hotPct: 85}
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
		{Name: "resubmit-every-route", About: "a Submit resent over gRPC, HTTP and JSON-RPC while the first one's coupon Confirm cannot get through", load: light, drive: resubmitEveryRoute},
		{Name: "janitor-during-retry", About: "the barrier janitor runs with a 1s max_age while a Cancel is held back by the proxy", load: light, drive: janitorDuringRetry,
			couponEnv: (*Stack).janitorEnv},
		{Name: "refund-before-confirm", About: "the shop refunds a PAID order while the proxy holds back its coupon's Confirm", load: light, drive: refundBeforeConfirm},
		{Name: "nats-down", About: "nats-server SIGKILLed during the workload, kept down a few seconds, restarted; the relay catches up", load: mixed, inject: natsDown},
		{Name: "relay-kill", About: "the coupon service SIGKILLed, again and again, while its relay drains a backlog built by stopping nats-server", load: mixed, inject: relayKill,
			couponEnv: (*Stack).relayKillEnv},
		{Name: "connection-flood", About: "idle connections beyond the coupon service's descriptor limit on its gRPC, HTTP and ops ports while a caller connected before claims",
			load: light, drive: connectionFlood, couponEnv: (*Stack).floodEnv, noFile: floodNoFile, edge: true},
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
	return ctxtime.Sleep(ctx, time.Until(r.started.Add(time.Duration(frac*float64(r.duration)))))
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
	_ = ctxtime.Sleep(ctx, r.hold(d))
	return r.s.faults.heal(context.WithoutCancel(ctx))
}

// killCoupon SIGKILLs the coupon service and starts it again after down.
func (r *run) killCoupon(ctx context.Context, why string, down time.Duration) error {
	r.s.faults.record(Fault{Target: "coupon", Kind: "SIGKILL " + why})
	r.s.coupon.kill()
	_ = ctxtime.Sleep(ctx, down)
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
	_ = ctxtime.Sleep(ctx, 700*time.Millisecond)
	return r.killCoupon(ctx, "during Try", time.Second)
}

func killCoordinator(ctx context.Context, r *run) error {
	if err := r.at(ctx, 0.3); err != nil {
		return nil
	}
	r.s.faults.record(Fault{Target: "coordinator-0", Kind: "SIGKILL mid-transaction"})
	r.s.coords[0].kill()
	_ = ctxtime.Sleep(ctx, r.hold(2*time.Second))
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
		_ = ctxtime.Sleep(ctx, 400*time.Millisecond)
		if err := r.s.faults.heal(context.WithoutCancel(ctx)); err != nil {
			return err
		}
		_ = ctxtime.Sleep(ctx, 800*time.Millisecond)
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
	user, err := r.directUser(ctx)
	if err != nil {
		return directOrder{}, fmt.Errorf("%w: %v", errNoCoupon, err)
	}
	return r.orderFor(ctx, rng, user)
}

// orderFor is a direct order of user with a fresh coupon.
func (r *run) orderFor(ctx context.Context, rng *rand.Rand, user int64) (directOrder, error) {
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
	r.rec.tried(err)
	return resp, err
}

// tryCouponAndPayment runs the coupon's Try and then, if it got through,
// the payment's for what is left to pay.
func (r *run) tryCouponAndPayment(ctx context.Context, t *tcc, o directOrder, phase2 string) (*couponv1.CouponBranchResponse, error) {
	resp, err := r.tryCoupon(ctx, t, o, phase2)
	if err == nil {
		err = r.tryPayment(ctx, t, o, o.amount-resp.GetDiscountAmount())
	}
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
		_ = ctxtime.Sleep(ctx, 300*time.Millisecond)
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
		rec.Note = "prepare answer lost"
		rec.abort(err)
		r.rec.txn(rec)
		return nil
	}
	r.rec.txn(rec)
	_, err = r.tryCouponAndPayment(ctx, t, o, phase2)
	switch {
	case err != nil:
		rec.abort(err)
	case !commit:
		rec.abort(nil)
	default:
		rec.Want = "commit"
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
		_, err = r.tryCouponAndPayment(ctx, t, o, r.s.proxyAddr[proxyDTMCoupon])
		if err != nil {
			rec.abort(err)
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
	_ = ctxtime.Sleep(ctx, 300*time.Millisecond)
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

// disorder is one sequence of branch calls sent straight to the coupon
// service: each step names its transaction (a gid label), the op and whose
// order payload it carries. plan is what each transaction's order service
// means to do; what it must end as follows from the Tries' answers (play).
type disorder struct {
	name  string
	steps []step
	plan  map[string]string // gid label → "commit" or "abort"
	// apart: each gid has an order (and coupon) of its own; otherwise
	// every gid of the sequence names the same one.
	apart bool
}

type step struct {
	gid, op string
	payload string // the gid label whose order the call carries; "" its own
}

func steps(s ...string) []step {
	var out []step
	for _, x := range s {
		f := strings.Split(x, " ")
		st := step{gid: f[0], op: f[1]}
		if len(f) > 2 {
			st.payload = f[2]
		}
		out = append(out, st)
	}
	return out
}

var disorders = []disorder{
	{name: "cancel-before-try", steps: steps("a cancel", "a try"), plan: map[string]string{"a": "abort"}},
	{name: "try-cancel-try", steps: steps("a try", "a cancel", "a try"), plan: map[string]string{"a": "abort"}},
	{name: "confirm-twice", steps: steps("a try", "a confirm", "a confirm"), plan: map[string]string{"a": "commit"}},
	{name: "try-twice-confirm", steps: steps("a try", "a try", "a confirm"), plan: map[string]string{"a": "commit"}},
	{name: "cancel-twice", steps: steps("a try", "a cancel", "a cancel"), plan: map[string]string{"a": "abort"}},
	// A Cancel of another gid, never tried, must not release a's lock.
	{name: "foreign-cancel", steps: steps("a try", "b cancel", "a confirm"), plan: map[string]string{"a": "commit", "b": "abort"}},
	// Another gid's Try of the same order must not share a's lock.
	{name: "foreign-try-same-order", steps: steps("a try", "b try", "b cancel", "a confirm"), plan: map[string]string{"a": "commit", "b": "abort"}},
	// A Cancel whose payload names another transaction's coupon (a forger,
	// or an order service that mixed up its payloads) gets past the
	// barrier, since its own Try ran: it must leave that lock alone.
	{name: "cancel-names-foreign-coupon", apart: true, steps: steps("a try", "b try", "b cancel a", "b confirm", "a confirm"),
		plan: map[string]string{"a": "commit", "b": "commit"}},
}

// expectation is what one transaction of a disorder must end as.
type expectation struct{ want, why, reason string }

// play runs d's steps through call and derives each transaction's
// expectation from the answers its Tries got, never from the plan alone: a
// transaction meant to commit commits only if one of its Tries answered OK;
// if every Try was refused (daily cap, not owner, locked by another
// transaction, ...) it must abort and leave the coupon as it was; if a Try's
// answer was lost and none answered OK, either end is right and the
// coupon's ledger says which it was.
func (d disorder) play(call func(step) error) map[string]expectation {
	type answers struct {
		acked, lost, refused int
		reason               string
	}
	got := map[string]*answers{}
	for label := range d.plan {
		got[label] = &answers{}
	}
	for _, st := range d.steps {
		err := call(st)
		if st.op != "try" {
			continue
		}
		a := got[st.gid]
		switch o, reason := classify(err); o {
		case acked:
			a.acked++
		case refused:
			a.refused++
			if a.reason == "" {
				a.reason = reason
			}
		default:
			a.lost++
		}
	}
	out := map[string]expectation{}
	for label, plan := range d.plan {
		a := got[label]
		switch {
		case plan != "commit":
			out[label] = expectation{want: "abort", why: abortDeliberate, reason: a.reason}
		case a.acked > 0:
			out[label] = expectation{want: "commit"}
		case a.lost > 0:
			out[label] = expectation{want: wantUnknown, why: abortFault}
		default:
			out[label] = expectation{want: "abort", why: abortRefusal, reason: a.reason}
		}
	}
	return out
}

func branchDisorder(ctx context.Context, r *run) error {
	rng := r.rng("disorder")
	rounds := max(1, int(r.duration/(4*time.Second)))
	for round := range rounds + 1 {
		user, err := r.directUser(ctx)
		if err != nil {
			return err
		}
		if round == rounds {
			// A last round with a user at the daily cap: every Try is
			// refused, and every sequence must end aborted with its
			// coupon AVAILABLE.
			if user, err = r.capUser(ctx, rng); err != nil {
				return err
			}
		}
		for _, d := range disorders {
			if err := r.runDisorder(ctx, rng, d, user); err != nil {
				return err
			}
		}
	}
	return nil
}

// runDisorder plays d with fresh coupons of user and records what each of
// its transactions must end as.
func (r *run) runDisorder(ctx context.Context, rng *rand.Rand, d disorder, user int64) error {
	orders := map[string]directOrder{}
	var shared directOrder
	for _, label := range sortedKeys(d.plan) {
		if !d.apart && shared.code != "" {
			orders[label] = shared
			continue
		}
		o, err := r.orderFor(ctx, rng, user)
		if err != nil {
			return err
		}
		orders[label], shared = o, o
	}
	gid := func(label string) string {
		return fmt.Sprintf("%sb-%s-%s-%s", r.prefix, d.name, label, orders[label].orderNo)
	}
	exp := d.play(func(st step) error {
		o := orders[st.gid]
		if st.payload != "" {
			o = orders[st.payload]
		}
		err := r.branchCall(ctx, gid(st.gid), "01", st.op, o)
		if st.op == "try" {
			r.rec.tried(err)
		} else if err != nil {
			// Confirm and Cancel never may refuse: DTM would retry them
			// forever.
			out, reason := classify(err)
			r.rec.mu.Lock()
			r.rec.branchErrs = append(r.rec.branchErrs, fmt.Sprintf("%s: %s %s answered %s %s", gid(st.gid), d.name, st.op, out, reason))
			r.rec.mu.Unlock()
		}
		return err
	})
	for _, label := range sortedKeys(d.plan) {
		o, e := orders[label], exp[label]
		r.rec.txn(&txnRec{GID: gid(label), OrderNo: o.orderNo, UserID: o.user, Coupon: o.code, Amount: o.amount, Direct: true,
			Want: e.want, Why: e.why, Reason: e.reason, Note: d.name})
	}
	return nil
}

// capUser funds a new user and uses coupons until the service's daily cap
// (risk.max_daily_uses) refuses the next Try, each use a Try and Confirm
// sent straight to the coupon service.
func (r *run) capUser(ctx context.Context, rng *rand.Rand) (int64, error) {
	user, err := r.addUser(ctx, richUser)
	if err != nil {
		return 0, err
	}
	d := disorder{name: "reach-daily-cap", steps: steps("a try", "a confirm"), plan: map[string]string{"a": "commit"}}
	for range maxDailyUses {
		if err := r.runDisorder(ctx, rng, d, user); err != nil {
			return 0, err
		}
	}
	r.capped = user
	return user, nil
}

func sortedKeys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
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
			r.rec.tried(err)
			if err == nil {
				rec1.Payment = true
				err = r.tryPayment(ctx, t1, o, o.amount-resp.GetDiscountAmount())
			}
			resp2, err2 := enlist(t2)
			r.rec.tried(err2)
			rec2.Note += "; coupon Try: " + errText(err2)
			if err2 == nil {
				// The order's payment exists under T1: PAYMENT_CONFLICT.
				rec2.Payment = true
				rec2.Note += "; payment Try: " + errText(r.tryPayment(ctx, t2, o, o.amount-resp2.GetDiscountAmount()))
			}
			rec2.abort(nil)
			_ = finish(ctx, t2, false)
			rec1.Want = "commit"
			if err != nil {
				rec1.abort(err)
			}
			_ = finish(ctx, t1, err == nil)
			continue
		}
		// T1 holds only the coupon; T2 enlists coupon and payment; the
		// order service gives T1 up, then commits T2.
		_, err1 = enlist(t1)
		r.rec.tried(err1)
		resp2, err2 := enlist(t2)
		r.rec.tried(err2)
		if err2 == nil {
			rec2.Payment = true
			err2 = r.tryPayment(ctx, t2, o, o.amount-resp2.GetDiscountAmount())
		}
		rec1.abort(nil)
		_ = finish(ctx, t1, false)
		rec2.Want = "commit"
		if err2 != nil {
			rec2.abort(err2)
		}
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
			_, err = r.tryCouponAndPayment(ctx, t, o, phase2)
			if err != nil {
				rec.abort(err)
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
