package chaos

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	shopv1 "github.com/opencoupon/coupon/examples/shop/proto/shop/v1"
	"github.com/opencoupon/coupon/internal/ctxtime"
	couponv1 "github.com/opencoupon/coupon/proto/coupon/v1"
)

// outcome is what a client learned from a call.
type outcome int

const (
	acked   outcome = iota // succeeded
	refused                // a definite business refusal: nothing was written
	unknown                // transport error, timeout, Unavailable: anything may have happened
)

func (o outcome) String() string { return [...]string{"acked", "refused", "unknown"}[o] }

// classify reads a gRPC error the way a careful client does.
func classify(err error) (outcome, string) {
	if err == nil {
		return acked, ""
	}
	st, ok := status.FromError(err)
	if !ok {
		return unknown, err.Error()
	}
	reason := st.Code().String()
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			reason = info.GetReason()
		}
	}
	switch st.Code() {
	case codes.FailedPrecondition, codes.Aborted, codes.InvalidArgument, codes.NotFound, codes.AlreadyExists, codes.PermissionDenied:
		return refused, reason
	}
	return unknown, reason + ": " + st.Message()
}

// claimRec is one ClaimCoupon request as the client saw it (the last
// answer, when the request was retried).
type claimRec struct {
	RequestID  string
	UserID     int64
	TemplateID int64
	Outcome    outcome
	Reason     string
	Code       string
	Tries      int
	Start, End time.Time // of the last try
}

// orderRec is one CreateOrder through the shop.
type orderRec struct {
	OrderNo string
	UserID  int64
	Amount  int64
	Coupon  string
	Outcome outcome
	Status  string // the order's status in the answer
	Reason  string
}

// txnRec is a transaction the scenario drove itself (not through the shop):
// Want is what the order service decided from the answers it got
// ("commit" only after every Try it sent answered OK, "abort" otherwise);
// DTM says what happened. Direct is set for branch calls sent without a
// coordinator, where Want is the outcome by construction — or "unknown"
// when a Try's answer was lost, which the coupon's ledger resolves.
type txnRec struct {
	GID     string
	OrderNo string
	UserID  int64
	Coupon  string
	Amount  int64
	Payment bool // the payment branch was enlisted
	Want    string
	Direct  bool
	Note    string
	// Why an abort: abortRefusal (a Try was refused: Reason says why),
	// abortFault (an answer was lost) or abortDeliberate (the scenario
	// chose to roll back).
	Why, Reason string
}

// Why a transaction aborted, in the report.
const (
	abortRefusal    = "refusal"
	abortFault      = "fault"
	abortDeliberate = "deliberate"
	wantUnknown     = "unknown"
)

// abort marks t as aborting: after a refused Try (err's reason is kept),
// a lost answer, or, with err nil, deliberately.
func (t *txnRec) abort(err error) {
	t.Want = "abort"
	switch o, reason := classify(err); {
	case err == nil:
		t.Why = abortDeliberate
	case o == refused:
		t.Why, t.Reason = abortRefusal, reason
	default:
		t.Why = abortFault
	}
}

// records is the oracle: what the workload did and what it was told.
type records struct {
	mu      sync.Mutex
	claims  map[string]*claimRec
	orders  []*orderRec
	txns    []*txnRec
	ops     atomic.Int64
	byUser  map[int64][]string // acked coupon codes per user
	replays []string           // request_ids whose replay answered another coupon
	// branchErrs are Confirm or Cancel calls that did not answer OK.
	branchErrs []string
	// refusedTries counts the coupon Tries of the scenario's own
	// transactions that were refused, by reason.
	refusedTries map[string]int
	// notes are the scenario's lines for the report.
	notes []string
	// edge are the connection flood's findings (invariant 8).
	edge []edgeFinding
}

// edgeFinding is one violation of invariant 8: what, and why.
type edgeFinding struct{ id, detail string }

// tried records the answer of one of the scenario's own coupon Tries.
func (r *records) tried(err error) {
	if o, reason := classify(err); o == refused {
		r.mu.Lock()
		r.refusedTries[reason]++
		r.mu.Unlock()
	}
}

func newRecords() *records {
	return &records{claims: map[string]*claimRec{}, byUser: map[int64][]string{}, refusedTries: map[string]int{}}
}

func (r *records) txn(t *txnRec) {
	r.mu.Lock()
	r.txns = append(r.txns, t)
	r.mu.Unlock()
}

// run is one scenario's run: its fixture, its workload, its records.
type run struct {
	s        *Stack
	sc       *Scenario
	index    int
	seed     uint64
	duration time.Duration
	prefix   string // of every order_no, request_id and gid of the run
	pool     *users
	callers  int     // of the load; 0: the scenario's own number
	capped   int64   // a user the scenario brought to the daily cap, if any
	tpls     []int64 // templates of the run: main, scarce, direct[, hot]
	hot      int64   // the hot template, when the scenario has one
	rec      *records
	seq      atomic.Int64
	started  time.Time
	faultIdx int
}

func (r *run) rng(stream string) *rand.Rand {
	h := fnv.New64a()
	fmt.Fprintf(h, "%s/%s", r.sc.Name, stream)
	return rand.New(rand.NewPCG(r.seed, h.Sum64()))
}

func (r *run) next(kind string) string { return fmt.Sprintf("%s%s%d", r.prefix, kind, r.seq.Add(1)) }

// as adds a caller's bearer token to ctx (issue 8's development callers).
func as(ctx context.Context, token string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
}

const (
	mainStock    = 4000
	mainDiscount = 500
	directStock  = 2000
)

// stockFor sizes a template's stock for the run's length, so that a long
// run's claims meet stock as a short one's do: base, plus perSecond for
// every second of workload.
func (r *run) stockFor(base, perSecond int64) int64 {
	return base + perSecond*int64(r.duration/time.Second)
}

// fixture creates the run's campaign and templates and funds its users.
func (r *run) fixture(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	now := time.Now()
	camp, err := r.s.admin.CreateCampaign(as(ctx, tokenAlice), &couponv1.CreateCampaignRequest{
		RequestId: r.prefix + "campaign", Name: "chaos " + r.sc.Name, CampaignType: "CHAOS", CreatedBy: "alice",
		StartTime: timestamppb.New(now.Add(-time.Hour)), EndTime: timestamppb.New(now.Add(48 * time.Hour)),
	})
	if err != nil {
		return fmt.Errorf("create campaign: %w", err)
	}
	specs := []*couponv1.CreateTemplateRequest{
		// The main template: plenty of stock, a per-user limit the load reaches.
		{Name: "fixed 5 off 10", CouponType: couponv1.CouponTemplate_FIXED_AMOUNT, DiscountAmount: mainDiscount,
			MinOrderAmount: 1000, TotalStock: r.stockFor(mainStock, 150), PerUserLimit: 6, DailyUseLimit: 3, SubStockCount: 4},
		// A small one that sells out during the run.
		{Name: "10% off, scarce", CouponType: couponv1.CouponTemplate_PERCENT_OFF, PercentOff: 10, MaxDiscount: 800,
			TotalStock: 40, PerUserLimit: 3, SubStockCount: 2},
		// Fresh coupons for the scenarios' own transactions.
		{Name: "direct", CouponType: couponv1.CouponTemplate_FIXED_AMOUNT, DiscountAmount: 300,
			TotalStock: r.stockFor(directStock, 20), PerUserLimit: 1000, SubStockCount: 2, Returnable: proto.Bool(true)},
	}
	if r.sc.hot {
		specs = append(specs, &couponv1.CreateTemplateRequest{Name: "hot", CouponType: couponv1.CouponTemplate_FIXED_AMOUNT,
			DiscountAmount: 100, TotalStock: 600, PerUserLimit: 1000, SubStockCount: 8})
	}
	for i, t := range specs {
		t.RequestId = fmt.Sprintf("%stemplate%d", r.prefix, i)
		t.CampaignId = camp.Id
		t.CreatedBy = "alice"
		t.ValidFrom, t.ValidUntil = timestamppb.New(now.Add(-time.Hour)), timestamppb.New(now.Add(48*time.Hour))
		tpl, err := r.s.admin.CreateTemplate(as(ctx, tokenAlice), t)
		if err != nil {
			return fmt.Errorf("create template %q: %w", t.Name, err)
		}
		// Maker-checker: someone else approves.
		if _, err := r.s.admin.ApproveTemplate(as(ctx, tokenBob), &couponv1.ApproveTemplateRequest{TemplateId: tpl.Id, Version: tpl.GetVersion(), ApprovedBy: "bob"}); err != nil {
			return fmt.Errorf("approve template %d: %w", tpl.Id, err)
		}
		r.tpls = append(r.tpls, tpl.Id)
	}
	if r.sc.hot {
		r.hot = r.tpls[3]
	}
	if err := r.newCohort(ctx); err != nil {
		return err
	}
	// Wait until the service's template cache serves the new templates.
	for _, id := range r.tpls {
		for {
			t, err := r.s.coupons.GetTemplate(as(ctx, tokenApp), &couponv1.GetTemplateRequest{TemplateId: id})
			if err == nil && t.Status == couponv1.CouponTemplate_ACTIVE {
				break
			}
			if ctx.Err() != nil {
				return fmt.Errorf("template %d never became claimable: %v", id, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return nil
}

// claim claims one coupon and records the answer. retry re-sends an earlier
// request_id (an idempotent retry).
func (r *run) claim(ctx context.Context, requestID string, user, tpl int64) *claimRec {
	return r.claimVia(ctx, r.s.coupons, requestID, user, tpl)
}

// claimVia is claim over a client of the caller's own (connection-flood's
// caller connected before the flood).
func (r *run) claimVia(ctx context.Context, cl couponv1.CouponServiceClient, requestID string, user, tpl int64) *claimRec {
	ctx, cancel := context.WithTimeout(ctx, 4*time.Second)
	defer cancel()
	start := time.Now()
	c, err := cl.ClaimCoupon(as(ctx, tokenApp), &couponv1.ClaimCouponRequest{RequestId: requestID, UserId: user, TemplateId: tpl})
	r.rec.ops.Add(1)
	o, reason := classify(err)
	r.rec.mu.Lock()
	defer r.rec.mu.Unlock()
	cr := r.rec.claims[requestID]
	if cr == nil {
		cr = &claimRec{RequestID: requestID, UserID: user, TemplateID: tpl}
		r.rec.claims[requestID] = cr
	}
	cr.Tries++
	cr.Start, cr.End = start, time.Now()
	if o == acked {
		if cr.Code != "" && cr.Code != c.Code {
			r.rec.replays = append(r.rec.replays, fmt.Sprintf("%s: %s then %s", requestID, cr.Code, c.Code))
		}
		if cr.Code == "" {
			r.rec.byUser[user] = append(r.rec.byUser[user], c.Code)
		}
		cr.Code = c.Code
	}
	// An acked answer stays the truth; a later refusal of a retry does not
	// undo it.
	if cr.Outcome != acked || cr.Code == "" {
		cr.Outcome, cr.Reason = o, reason
	}
	return cr
}

// order places an order through the shop.
func (r *run) order(ctx context.Context, user int64, coupon string, amount int64) *orderRec {
	no := r.next("o")
	rec := &orderRec{OrderNo: no, UserID: user, Amount: amount, Coupon: coupon}
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	o, err := r.s.orders.CreateOrder(as(ctx, tokenShop), &shopv1.CreateOrderRequest{
		OrderNo: no, UserId: user, Amount: amount, Currency: "CNY", ProductLine: "food", CouponCode: coupon,
		Items: []*shopv1.OrderItem{{Sku: "sku-1", ProductLine: "food", Quantity: 1, Amount: amount}},
	})
	r.rec.ops.Add(1)
	rec.Outcome, rec.Reason = classify(err)
	if err == nil {
		rec.Status, rec.Reason = o.Status.String(), o.FailureReason
	}
	r.rec.mu.Lock()
	r.rec.orders = append(r.rec.orders, rec)
	r.rec.mu.Unlock()
	return rec
}

// couponOf picks one of the user's claimed coupons (possibly used already:
// the order must then be refused).
func (r *run) couponOf(rng *rand.Rand, user int64) string {
	r.rec.mu.Lock()
	defer r.rec.mu.Unlock()
	cs := r.rec.byUser[user]
	if len(cs) == 0 {
		return ""
	}
	return cs[rng.IntN(len(cs))]
}

// warmUp gives every user a few coupons of the main template before faults.
func (r *run) warmUp(ctx context.Context) error {
	var wg sync.WaitGroup
	var failed atomic.Int64
	for _, u := range r.cohortUsers() {
		wg.Go(func() {
			for range 2 {
				if c := r.claim(ctx, r.next("w"), u, r.tpls[0]); c.Outcome != acked {
					failed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if n := failed.Load(); n > 0 {
		return fmt.Errorf("%d warm-up claims failed before any fault (is the stack healthy? see %s)", n, r.s.Dir)
	}
	return nil
}

// load is the mixed workload: callers claiming, retrying claims and placing
// orders with and without coupons until the deadline. Each caller sends its
// next operation as soon as the last one answered, so the rate is what the
// stack sustains under the fault, not a fixed trickle.
type load struct {
	workers  int // callers, unless the run sets its own number
	claimPct int // the rest are orders
	hotPct   int // of claims, on the hot template
}

// faultBackoff is a caller's pause after an operation that failed for a
// fault (plus up to as much again, jittered).
const faultBackoff = 50 * time.Millisecond

// faulted reports whether the order failed for a fault rather than a
// business refusal: its answer was lost or its transaction failed.
func (o *orderRec) faulted() bool {
	return o.Outcome == unknown || o.Reason == "TRANSACTION_FAILED" || o.Reason == "ABANDONED"
}

func (r *run) load(ctx context.Context, l load, until time.Time) {
	var wg sync.WaitGroup
	callers := l.workers
	if r.callers > 0 {
		// The run's number, in the scenario's proportion to the busiest
		// profile (the storm's eight).
		callers = max(1, r.callers*l.workers/storm.workers)
	}
	for w := range callers {
		rng := r.rng(fmt.Sprintf("worker-%d", w))
		wg.Go(func() {
			var lastUnknown *claimRec
			faulted := false
			for time.Now().Before(until) && ctx.Err() == nil {
				if faulted {
					// A client backs off a little after a failure, as real
					// ones do, instead of spinning on a dead dependency.
					if ctxtime.Sleep(ctx, faultBackoff+time.Duration(rng.Int64N(int64(faultBackoff)))) != nil {
						return
					}
					faulted = false
				}
				user := r.loadUser(ctx, rng)
				switch p := rng.IntN(100); {
				case p < l.claimPct:
					switch {
					case lastUnknown != nil && rng.IntN(2) == 0:
						// A client retries a claim whose answer it did not get.
						r.claim(ctx, lastUnknown.RequestID, lastUnknown.UserID, lastUnknown.TemplateID)
						lastUnknown = nil
						continue
					case rng.IntN(100) < l.hotPct && r.hot != 0:
						r.claim(ctx, r.next("c"), user, r.hot)
						continue
					}
					tpl := r.tpls[0]
					if rng.IntN(4) == 0 {
						tpl = r.tpls[1]
					}
					if c := r.claim(ctx, r.next("c"), user, tpl); c.Outcome == unknown {
						lastUnknown, faulted = c, true
					}
				case p < l.claimPct+(100-l.claimPct)*8/10:
					if code := r.couponOf(rng, user); code != "" {
						faulted = r.order(ctx, user, code, 1000+rng.Int64N(19000)).faulted()
					}
				default:
					faulted = r.order(ctx, user, "", 500+rng.Int64N(5000)).faulted()
				}
			}
		})
	}
	wg.Wait()
}

var errNoCoupon = errors.New("no coupon to use")

// freshCoupon claims a new coupon of the direct template for user, for
// scenarios that need one they know is AVAILABLE.
func (r *run) freshCoupon(ctx context.Context, user int64) (string, error) {
	for range 5 {
		c := r.claim(ctx, r.next("f"), user, r.tpls[2])
		if c.Outcome == acked {
			return c.Code, nil
		}
		if c.Outcome == refused {
			return "", fmt.Errorf("%w: claim refused: %s", errNoCoupon, c.Reason)
		}
	}
	return "", fmt.Errorf("%w: claims keep failing", errNoCoupon)
}
