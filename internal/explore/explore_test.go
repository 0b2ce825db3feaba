package explore_test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/dtm-labs/client/dtmcli/dtmimp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/opencoupon/coupon/internal/app"
	"github.com/opencoupon/coupon/internal/coupontest"
	"github.com/opencoupon/coupon/internal/janitor"
	"github.com/opencoupon/coupon/internal/testenv"
	"github.com/opencoupon/coupon/participant"
	couponmysql "github.com/opencoupon/coupon/participant/mysql"
	couponredis "github.com/opencoupon/coupon/participant/redis"
	"github.com/opencoupon/coupon/participant/rpc"
	"github.com/opencoupon/coupon/participant/tplcache"
	couponv1 "github.com/opencoupon/coupon/proto/coupon/v1"
	"github.com/opencoupon/coupon/reconcile"
)

var (
	flagTxns  = flag.Int("explore.txns", 0, "transactions per schedule (0: the preset of -short or the default run)")
	flagDups  = flag.Int("explore.dups", -1, "duplicate deliveries per schedule (-1: the preset)")
	flagUntil = flag.String("explore.until", "", "stop once a schedule fails this check (\"any\": any check)")
)

// The presets; docs/explorer.md lists what each explores.
var (
	shortBounds   = bounds{Txns: 2, Dups: 1, Janitor: true, Repair: true}
	defaultBounds = bounds{Txns: 3, Dups: 1, Janitor: true, Repair: true}
)

func chosenBounds(t *testing.T) bounds {
	b := defaultBounds
	if testing.Short() {
		b = shortBounds
	}
	if *flagTxns > 0 {
		b.Txns = *flagTxns
	}
	if *flagDups >= 0 {
		b.Dups = *flagDups
	}
	if b.Txns < 1 || b.Txns > len(specs) {
		t.Fatalf("-explore.txns %d is not within 1..%d", b.Txns, len(specs))
	}
	return b
}

// TestInterleavingExplorer enumerates every schedule within the bound of
// the branch calls that can touch one coupon — a TCC (Try, Confirm,
// Cancel), a second TCC for the same order, a Saga (Use, Revert) for
// another order and the refund message (Return) of the order that
// committed, each call possibly delivered twice, a Try possibly timing
// out, plus one barrier-janitor pass and one reconcile repair at any
// point — on the real service, and checks the money invariants after each.
func TestInterleavingExplorer(t *testing.T) {
	b := chosenBounds(t)
	w := newWorld(t)
	x := &explorer{w: w, b: b, until: *flagUntil}
	start := time.Now()
	x.run(t)
	msg := fmt.Sprintf("explored %s schedules (%d states, %d transitions, %d events that changed nothing, %d runs on the service) in %s, bound %s",
		x.schedules(), len(x.nodes), x.edges, x.dominated, x.runs, time.Since(start).Round(time.Second), b)
	t.Log(msg)
	fmt.Println(msg)
	if len(x.nodes) < 2 {
		t.Fatal("nothing explored")
	}
	for i, f := range x.failed {
		if i == 5 {
			t.Errorf("… and %d more failing schedules", len(x.failed)-5)
			break
		}
		t.Errorf("violation %s\n  schedule: %s", f.v, strings.Join(f.schedule, " → "))
	}
}

// world is the real service every schedule runs on: one database set,
// one template; each execution claims a fresh coupon for a fresh user and
// uses fresh gids and order numbers, so nothing needs resetting.
type world struct {
	srv     *coupontest.Server
	svc     *participant.Service
	store   *couponmysql.Stores
	janitor *janitor.Janitor
	repair  *reconcile.Repairer
	tpl     int64
	run     string
	fresh   chan claimed
	// past holds the final DTM status of every gid of earlier executions.
	past map[string]string
	cur  *execution
}

func newWorld(t *testing.T) *world {
	t.Helper()
	ctx := ctxT(t)
	srv := coupontest.Start(t, func(c *app.Config) {
		c.Service.SweepInterval, c.Service.AuditInterval = -1, -1
	})
	now := time.Now()
	camp, err := srv.Admin.CreateCampaign(ctx, &couponv1.CreateCampaignRequest{
		Name: "explore", CampaignType: "PROMOTION", CreatedBy: "alice",
		StartTime: timestamppb.New(now.Add(-time.Hour)), EndTime: timestamppb.New(now.Add(30 * 24 * time.Hour)),
	})
	if err != nil {
		t.Fatalf("CreateCampaign: %v", err)
	}
	tpl, err := srv.Admin.CreateTemplate(ctx, &couponv1.CreateTemplateRequest{
		CampaignId: camp.Id, Name: "5 off 50", CouponType: couponv1.CouponTemplate_FIXED_AMOUNT,
		DiscountAmount: 500, MinOrderAmount: 5000, TotalStock: 10_000_000,
		ValidFrom: timestamppb.New(now.Add(-time.Minute)), ValidUntil: timestamppb.New(now.Add(7 * 24 * time.Hour)),
		CreatedBy: "alice",
	})
	if err != nil {
		t.Fatalf("CreateTemplate: %v", err)
	}
	if _, err = srv.AdminAs(coupontest.TokenBob).ApproveTemplate(ctx, &couponv1.ApproveTemplateRequest{TemplateId: tpl.Id, Version: tpl.GetVersion()}); err != nil {
		t.Fatalf("ApproveTemplate: %v", err)
	}
	store := srv.App.Store()
	r := couponredis.New(srv.App.Redis(), srv.Prefix)
	t.Cleanup(r.Close)
	ids, err := participant.NewIDGen(2, nil)
	if err != nil {
		t.Fatal(err)
	}
	// The domain service the schedules drive: the real MySQL store and
	// Redis, its log discarded (every refused branch logs a warning).
	cfg := srv.Config.Service
	templates := tplcache.New(tplcache.Deps{Catalog: store.Catalog, Blobs: r.Blobs, Leases: r.Leases},
		tplcache.Config{Refresh: cfg.TemplateRefresh, RedisTTL: cfg.TemplateRedisTTL})
	svc, err := participant.NewService(participant.Deps{
		Catalog: store.Catalog, Coupons: store.Coupons, Branches: store.Branches, Stock: r.Stock, Requests: r.Requests,
		Leases: r.Leases, Templates: templates, IDs: ids,
	}, cfg)
	if err != nil {
		t.Fatalf("NewService: %v", err)
	}
	w := &world{srv: srv, svc: svc, store: store, tpl: tpl.Id, run: testenv.Unique(t), past: map[string]string{}, fresh: make(chan claimed, 16)}
	cctx, stop := context.WithCancel(context.Background())
	t.Cleanup(func() {
		stop()
		for range w.fresh {
		}
	})
	go w.claim(cctx)
	// A pass of the janitor sees every row past max_age: it deletes what
	// max_age and retention allow, asking the model for the status of
	// each transaction.
	w.janitor, err = store.Branches.BarrierJanitor(janitor.Config{
		Status: w.janitorStatus,
		Now:    func() time.Time { return time.Now().Add(janitor.DefaultMaxAge + time.Hour) },
	})
	if err != nil {
		t.Fatal(err)
	}
	state, err := reconcile.OpenState(ctx, testenv.MustDatabase(t, w.run+"_state"))
	if err != nil {
		t.Fatalf("reconcile state: %v", err)
	}
	t.Cleanup(func() { state.Close() })
	w.repair = &reconcile.Repairer{
		State: state, DTM: reconcileStatus{w}, Coupons: domainCoupons{svc: svc, store: store},
		TimeoutToFail: time.Minute, Grace: time.Minute, Apply: true,
	}
	return w
}

func ctxT(tb testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	tb.Cleanup(cancel)
	return ctx
}

// dtmStatus is what DTM would report for gid: the model's view for the
// current execution's transactions, the recorded end for earlier ones.
func (w *world) dtmStatus(gid string) string {
	if s, ok := w.past[gid]; ok {
		return s
	}
	if x := w.cur; x != nil {
		for i, g := range x.gids {
			if g == gid {
				return statusOf(specs[i].kind, x.m.tx[i].phase)
			}
		}
	}
	return ""
}

func statusOf(k kind, p phase) string {
	switch p {
	case idle:
		return ""
	case reserving, reserved:
		if k == kindTCC {
			return "prepared"
		}
		return "submitted"
	case committing, sending:
		return "submitted"
	case aborting:
		return "aborting"
	case succeeded:
		return "succeed"
	default:
		return "failed"
	}
}

func (w *world) janitorStatus(_ context.Context, gid string) (string, error) {
	return w.dtmStatus(gid), nil
}

type reconcileStatus struct{ w *world }

func (r reconcileStatus) Status(_ context.Context, gid string) (string, error) {
	if s := r.w.dtmStatus(gid); s != "" {
		return s, nil
	}
	return reconcile.DTMUnknown, nil
}

// domainCoupons is reconcile's view of the coupon service: its repair's
// Cancel goes through the domain's Unlock, barrier included, as the gRPC
// UnlockCoupon would.
type domainCoupons struct {
	svc   *participant.Service
	store *couponmysql.Stores
}

func (d domainCoupons) Unlock(ctx context.Context, l reconcile.Lock) error {
	br := participant.Branch{TransType: "tcc", GID: l.GID, BranchID: l.BranchID, Op: dtmimp.OpCancel}
	_, err := d.svc.Unlock(ctx, br, participant.BranchRequest{
		UserID: l.UserID, Code: l.CouponCode, Order: participant.Order{OrderNo: l.OrderNo, UserID: l.UserID, Amount: l.Amount},
	})
	return rpc.Status(ctx, discard, err)
}

// Return is ReturnCoupon called directly, as reconcile's repair calls it;
// its refusals reach the repair as the gRPC statuses it reads reasons from.
func (d domainCoupons) Return(ctx context.Context, r reconcile.Refund) error {
	_, err := d.svc.Return(ctx, participant.Branch{}, participant.ReturnRequest{
		RequestID: r.RequestID(), UserID: r.UserID, Code: r.CouponCode, OrderNo: r.OrderNo,
		Reason: "reconcile: order refunded without its coupon",
	})
	return rpc.Status(ctx, discard, err)
}

func (d domainCoupons) Coupon(ctx context.Context, userID int64, code string) (reconcile.CouponState, error) {
	c, err := d.store.Coupons.ByCode(ctx, userID, code)
	if err != nil {
		return reconcile.CouponState{}, err
	}
	return reconcile.CouponState{Status: c.Status.String(), OrderNo: c.OrderNo, GID: c.LockGID}, nil
}

// explorer walks the graph of states a coupon and the model can be in.
// A state is the model's and the database's (gids and order numbers named
// by role); an edge is one event. Each edge runs once on the real
// service: a fresh coupon is claimed, the state's rows are written for it
// and its fresh gids, the event runs, and the rows are read back. Every
// schedule within the bound is a path from the start to an end state, so
// checking every end state checks every schedule.
type explorer struct {
	w         *world
	b         bounds
	until     string // stop once this check fails; "any"; "" runs to the end
	nodes     map[string]*node
	memo      map[string]result // what an event did from a state's rows
	order     []*node
	edges     int
	dominated int
	runs      int
	failed    []failure
}

type node struct {
	key    string
	m      model
	db     dbState
	next   []*node
	end    bool
	parent *node
	via    string
}

type failure struct {
	v        violation
	schedule []string
}

func (n *node) schedule() []string {
	var out []string
	for ; n != nil && n.parent != nil; n = n.parent {
		out = append(out, n.via)
	}
	slices.Reverse(out)
	return out
}

func (x *explorer) run(t *testing.T) {
	ctx := ctxT(t)
	// The start: a freshly claimed coupon, as the database holds it.
	first := x.w.newExecution(t)
	root := &node{m: newModel(), db: first.read(ctx, t)}
	x.w.finish(first)
	root.key = root.m.key() + "#" + root.db.key()
	x.nodes = map[string]*node{root.key: root}
	x.memo = map[string]result{}
	queue := []*node{root}
	for len(queue) > 0 {
		n := queue[0]
		queue = queue[1:]
		x.order = append(x.order, n)
		for _, ev := range n.m.options(x.b) {
			name := n.m.describe(ev)
			if ev.kind == evEnd {
				n.end = true
				for _, v := range check(n.db.snapshot(), n.views()) {
					x.failed = append(x.failed, failure{v, append(n.schedule(), "end")})
				}
				continue
			}
			m, db, vs := x.step(ctx, t, n, ev)
			for _, v := range vs {
				x.failed = append(x.failed, failure{v, append(n.schedule(), name)})
			}
			c := &node{m: m, db: db, parent: n, via: name}
			c.key = m.key() + "#" + db.key()
			if c.key == n.key || db.key() == n.db.key() && m.essential() == n.m.essential() {
				// Nothing changed but bounds used up or optional calls
				// dropped (a retry answered ONGOING again, a duplicate the
				// barrier skipped, a janitor pass or repair with nothing
				// to do): every schedule from there is one from here.
				x.dominated++
				continue
			}
			x.edges++
			if old, ok := x.nodes[c.key]; ok {
				n.next = append(n.next, old)
				continue
			}
			x.nodes[c.key] = c
			n.next = append(n.next, c)
			queue = append(queue, c)
		}
		if x.stopped() {
			return
		}
		if testing.Verbose() && len(x.order)%1000 == 0 {
			fmt.Printf("explore: %d states done, %d queued, %d runs\n", len(x.order), len(queue), x.runs)
		}
	}
	x.liveness()
}

func (x *explorer) stopped() bool {
	for _, f := range x.failed {
		if x.until == "any" || f.v.Check == x.until {
			return true
		}
	}
	return false
}

// step runs event ev from state n: on the model alone when it touches no
// row, else on a fresh coupon holding n's rows.
func (x *explorer) step(ctx context.Context, t *testing.T, n *node, ev event) (model, dbState, []violation) {
	m := n.m.clone()
	var c call
	answer := false
	switch ev.kind {
	case evTimeout:
		m.timeout(ev.tx)
	case evCommit:
		m.commit(ev.tx)
	case evAbort:
		// A TCC's other Try failed (rollback), or a saga's later branch
		// failed (compensation).
		m.abort(ev.tx)
	case evStart:
		m.start(ev.tx)
		if specs[ev.tx].kind == kindTCC {
			break // the Try is on its way; the order service may give up on it
		}
		// A saga's action and a message's branch are sent as the
		// transaction is submitted.
		c, answer = m.delivered(len(m.pending)-1), true
	case evDeliver:
		c = m.delivered(ev.idx)
		answer = !c.late
	case evDup:
		d := &m.dups[ev.idx]
		d.done = true
		m.dupsUsed++
		c = call{tx: d.tx, op: d.op}
	case evJanitor:
		m.janitor = true
	case evRepair:
		m.repair = true
	}
	var r result
	switch ev.kind {
	case evTimeout, evCommit, evAbort:
		m.sortPending()
		return m, n.db, nil
	case evStart:
		if specs[ev.tx].kind == kindTCC {
			m.sortPending()
			return m, n.db, nil
		}
		r = x.perform(ctx, t, n, m, ev, c)
	default:
		r = x.perform(ctx, t, n, m, ev, c)
	}
	if answer {
		m.answer(c, r.code)
	}
	if ev.kind == evJanitor {
		m.forget()
	}
	m.sortPending()
	return m, r.db, r.violations
}

// result is what one event did on the service.
type result struct {
	db         dbState
	code       codes.Code
	violations []violation
}

// perform runs a call, a janitor pass or a repair from n's rows on a fresh
// coupon. What it does depends only on the rows and on what the event
// reads of the model (the call and its order, the statuses DTM reports,
// the orders' statuses), so each is run once.
func (x *explorer) perform(ctx context.Context, t *testing.T, n *node, m model, ev event, c call) result {
	sig := fmt.Sprintf("call %d %s %d", c.tx, c.op, m.refundOf)
	switch ev.kind {
	case evJanitor:
		sig = "janitor"
		for i, tx := range m.tx {
			sig += " " + statusOf(specs[i].kind, tx.phase)
		}
	case evRepair:
		sig = "repair " + m.essential()
	}
	memo := n.db.key() + "#" + sig
	if r, ok := x.memo[memo]; ok {
		return r
	}
	x.runs++
	e := x.w.newExecution(t)
	defer x.w.finish(e)
	e.m = m
	e.restore(ctx, t, n.db)
	var r result
	switch ev.kind {
	case evJanitor:
		if _, err := e.w.janitor.RunOnce(ctx); err != nil {
			t.Fatalf("janitor: %v", err)
		}
	case evRepair:
		e.reconcile(ctx, t)
	default:
		r.code = e.call(ctx, t, c)
	}
	r.db, r.violations = e.read(ctx, t), e.violations
	x.memo[memo] = r
	return r
}

// liveness fails every state from which no end can be reached: some
// transaction can never finish.
func (x *explorer) liveness() {
	canEnd := map[*node]bool{}
	for changed := true; changed; {
		changed = false
		for _, n := range x.order {
			if canEnd[n] {
				continue
			}
			ok := n.end
			for _, c := range n.next {
				ok = ok || canEnd[c]
			}
			if ok {
				canEnd[n], changed = true, true
			}
		}
	}
	for _, n := range x.order {
		if !canEnd[n] {
			x.failed = append(x.failed, failure{violation{CheckFinishes, "no schedule from here lets every transaction finish"}, n.schedule()})
			return
		}
	}
}

// schedules counts the paths from the start to an end: the schedules the
// walk covered. The graph has no cycles: every event moves a phase, uses
// up a bound or adds rows.
func (x *explorer) schedules() *big.Int {
	memo := map[*node]*big.Int{}
	var count func(n *node) *big.Int
	count = func(n *node) *big.Int {
		if c, ok := memo[n]; ok {
			return c
		}
		memo[n] = new(big.Int) // a cycle, were there one, would count nothing
		c := new(big.Int)
		if n.end {
			c.SetInt64(1)
		}
		for _, k := range n.next {
			c.Add(c, count(k))
		}
		memo[n] = c
		return c
	}
	return count(x.order[0])
}

func (n *node) views() []txnView {
	var out []txnView
	for i, s := range specs {
		t := n.m.tx[i]
		order := ""
		switch {
		case i != refundTx:
			order = fmt.Sprintf("o%d", s.order+1)
		case n.m.refundOf >= 0:
			order = fmt.Sprintf("o%d", specs[n.m.refundOf].order+1)
		}
		out = append(out, txnView{
			Name: s.name, GID: s.name, OrderNo: order, Started: t.phase != idle,
			Reserved: t.ok, Committed: t.committed, Refunded: t.refunded, Finished: t.phase.finished(),
		})
	}
	return out
}

// execution is one schedule's coupon, transactions and model.
type execution struct {
	w          *world
	user       int64
	code       string
	couponID   int64
	gids       [4]string
	orders     [2]string
	m          model
	violations []violation
	// ledgerAt are the created_at of the last snapshot's ledger rows.
	ledgerAt []time.Time
}

// claimed is a coupon claimed for a fresh user.
type claimed struct {
	n        int
	user     int64
	code     string
	couponID int64
	err      error
}

// claim claims a coupon for a fresh user per execution, ahead of the
// explorer, through the service's own ClaimCoupon.
func (w *world) claim(ctx context.Context) {
	defer close(w.fresh)
	for n := 1; ; n++ {
		user := int64(1_000_000 + n)
		c, err := w.srv.Coupons.ClaimCoupon(ctx, &couponv1.ClaimCouponRequest{
			RequestId: fmt.Sprintf("%s-claim-%d", w.run, n), UserId: user, TemplateId: w.tpl,
		})
		f := claimed{n: n, user: user, err: err}
		if err == nil {
			f.code = c.Code
			if id, ok := participant.CodeID(c.Code); ok {
				f.couponID = id
			} else {
				f.err = fmt.Errorf("coupon code %q has no id", c.Code)
			}
		}
		select {
		case w.fresh <- f:
		case <-ctx.Done():
			return
		}
		if f.err != nil {
			return
		}
	}
}

func (w *world) newExecution(t *testing.T) *execution {
	t.Helper()
	f, ok := <-w.fresh
	if !ok || f.err != nil {
		t.Fatalf("ClaimCoupon: %v", f.err)
	}
	e := &execution{w: w, user: f.user, code: f.code, couponID: f.couponID, m: newModel()}
	for i, s := range specs {
		e.gids[i] = fmt.Sprintf("%s-%d-%s", w.run, f.n, s.name)
	}
	e.orders = [2]string{fmt.Sprintf("%s-%d-o1", w.run, f.n), fmt.Sprintf("%s-%d-o2", w.run, f.n)}
	w.cur = e
	return e
}

// finish records the execution's transactions as DTM ends them: the
// janitor of later executions may then delete their barrier rows.
func (w *world) finish(e *execution) {
	for i, g := range e.gids {
		switch s := statusOf(specs[i].kind, e.m.tx[i].phase); s {
		case "succeed", "failed":
			w.past[g] = s
		case "":
		default:
			// The execution ran one event and was left: its rows are
			// garbage the janitor may take.
			w.past[g] = "failed"
		}
	}
	w.cur = nil
}

func (e *execution) orderOf(i int) string {
	if i == refundTx {
		if e.m.refundOf < 0 {
			return ""
		}
		i = e.m.refundOf
	}
	return e.orders[specs[i].order]
}

// call runs one branch call against the domain service exactly as the
// gRPC server would for DTM, and returns the status DTM would see.
func (e *execution) call(ctx context.Context, t *testing.T, c call) codes.Code {
	s := specs[c.tx]
	tt := map[kind]string{kindTCC: "tcc", kindSaga: "saga", kindRefund: "msg"}[s.kind]
	br := participant.Branch{TransType: tt, GID: e.gids[c.tx], BranchID: "01", Op: c.op}
	order := e.orderOf(c.tx)
	req := participant.BranchRequest{UserID: e.user, Code: e.code, Order: participant.Order{OrderNo: order, UserID: e.user, Amount: 10_000}}
	var err error
	switch {
	case s.kind == kindTCC && c.op == dtmimp.OpTry:
		_, err = e.w.svc.Lock(ctx, br, req)
	case s.kind == kindTCC && c.op == dtmimp.OpConfirm:
		_, err = e.w.svc.Consume(ctx, br, req)
	case s.kind == kindTCC && c.op == dtmimp.OpCancel:
		_, err = e.w.svc.Unlock(ctx, br, req)
	case s.kind == kindSaga && c.op == dtmimp.OpAction:
		_, err = e.w.svc.Use(ctx, br, req)
	case s.kind == kindSaga && c.op == dtmimp.OpCompensate:
		_, err = e.w.svc.Revert(ctx, br, req)
	case s.kind == kindRefund:
		_, err = e.w.svc.Return(ctx, br, participant.ReturnRequest{
			RequestID: "refund-" + order, UserID: e.user, Code: e.code, OrderNo: order, Reason: "refund",
		})
	default:
		t.Fatalf("no call %s.%s", s.name, c.op)
	}
	code := status.Code(rpc.Status(ctx, discard, err))
	reserve := c.op == dtmimp.OpTry || s.kind == kindSaga && c.op == dtmimp.OpAction
	switch {
	case reserve && code != codes.OK && code != codes.Aborted:
		t.Fatalf("%s.%s answered %s: %v", s.name, c.op, code, err)
	case !reserve && code != codes.OK && code != codes.FailedPrecondition && code != codes.Unavailable:
		e.violations = append(e.violations, violation{CheckAnswers, fmt.Sprintf("%s.%s answered %s (%v)", s.name, c.op, code, err)})
	}
	return code
}

var discard = slog.New(slog.DiscardHandler)

// reconcile runs reconcile's repair on what the nightly match would find
// for this coupon now: an ORPHAN_LOCK for each order with a lock the
// ledger never settles, with the order's status as the shop reports it.
func (e *execution) reconcile(ctx context.Context, t *testing.T) {
	s := e.read(ctx, t)
	_, fromRole := e.roles()
	type lock struct {
		gid, order string
		at         time.Time
		discount   int64
	}
	var out []lock
	settle := func(order, gid string) {
		k := -1
		for i, l := range out {
			if l.order == order && (l.gid == gid || k < 0) {
				k = i
			}
		}
		if k >= 0 {
			out = append(out[:k], out[k+1:]...)
		}
	}
	for i, r := range s.Ledger {
		switch r.Op {
		case participant.OpLock:
			out = append(out, lock{fromRole[r.GID], fromRole[r.OrderNo], e.ledgerAt[i], r.Discount})
		case participant.OpConsume, participant.OpRelease:
			settle(fromRole[r.OrderNo], fromRole[r.GID])
		}
	}
	var buf bytes.Buffer
	write := func(f reconcile.Finding) {
		b, err := json.Marshal(f)
		if err != nil {
			t.Fatal(err)
		}
		buf.Write(append(b, '\n'))
	}
	// A refunded order whose coupon the ledger shows consumed and not
	// returned: REFUND_COUPON_NOT_RETURNED.
	consumed := map[string]string{} // order → gid of the consume not returned
	for _, r := range s.Ledger {
		switch order := fromRole[r.OrderNo]; r.Op {
		case participant.OpConsume:
			consumed[order] = fromRole[r.GID]
		case participant.OpReturn:
			delete(consumed, order)
		}
	}
	for order, gid := range consumed {
		if e.orderStatus(order) == "REFUNDED" {
			write(reconcile.Finding{
				Class: reconcile.ClassRefundCouponNotReturned, OrderNo: order, CouponCode: e.code, AmountAtRisk: 500,
				OrderStatus: "REFUNDED", OrderAmount: 10_000, UserID: e.user, GID: gid, BranchID: "01",
			})
		}
	}
	for _, l := range out {
		status := e.orderStatus(l.order)
		if status == "REFUNDED" {
			continue // reconcile judges a refunded order by its return alone
		}
		at := l.at
		f := reconcile.Finding{
			Class: reconcile.ClassOrphanLock, OrderNo: l.order, CouponCode: e.code, AmountAtRisk: l.discount,
			OrderStatus: status, OrderAmount: 10_000, UserID: e.user, GID: l.gid, BranchID: "01", LockedAt: &at,
		}
		write(f)
	}
	// A repair that fails is retried by the next run; what it left is
	// for the checks to judge.
	_, _ = e.w.repair.Repair(ctx, time.Now().UTC().Format(time.DateOnly), 1, &buf, io.Discard, io.Discard)
}

// orderStatus is the order as the shop reports it.
func (e *execution) orderStatus(order string) string {
	if e.m.refundOf >= 0 && e.orderOf(e.m.refundOf) == order {
		return "REFUNDED"
	}
	pending := false
	for i := range refundTx {
		if e.orders[specs[i].order] != order || e.m.tx[i].phase == idle {
			continue
		}
		if e.m.tx[i].committed {
			return "PAID"
		}
		if !e.m.tx[i].phase.finished() {
			pending = true
		}
	}
	if pending {
		return "PENDING"
	}
	return "CANCELLED"
}

// dbState is what the database holds for one execution's coupon, with
// gids and order numbers named by role (tcc1…, o1, o2): the coupon row,
// its ledger, the user's day counts, the barrier rows of the execution's
// transactions and the coupon's return records.
type dbState struct {
	Status        participant.CouponStatus
	OrderNo, GID  string
	Branch        string
	Discount      int64
	Locked, Used  bool // locked_at, used_at set
	Ledger        []ledgerRow
	Daily         bool // day-count rows exist
	DailyTemplate int64
	DailyAll      int64
	Barrier       []string // role/branch/op/reason
	Returns       []string // request role/order role
}

func (s dbState) key() string {
	return fmt.Sprintf("%v", s)
}

func (s dbState) snapshot() snapshot {
	return snapshot{Status: s.Status, OrderNo: s.OrderNo, GID: s.GID, Discount: s.Discount,
		Ledger: s.Ledger, DailyTemplate: s.DailyTemplate, DailyAll: s.DailyAll}
}

// roles maps the execution's gids and order numbers to roles and back.
func (e *execution) roles() (toRole, fromRole map[string]string) {
	toRole, fromRole = map[string]string{"": ""}, map[string]string{"": ""}
	for i, g := range e.gids {
		toRole[g], fromRole[specs[i].name] = specs[i].name, g
	}
	for i, o := range e.orders {
		r := fmt.Sprintf("o%d", i+1)
		toRole[o], fromRole[r] = r, o
		toRole["refund-"+o], fromRole["refund-"+r] = "refund-"+r, "refund-"+o
		rr := reconcile.Refund{OrderNo: o}.RequestID()
		toRole[rr], fromRole["reconcile-"+r] = "reconcile-"+r, rr
	}
	return toRole, fromRole
}

func (e *execution) roleOf(toRole map[string]string, v string) string {
	if r, ok := toRole[v]; ok {
		return r
	}
	return "?" + v // not this execution's: the checks will say so
}

// read reads the execution's state back, in one round trip.
func (e *execution) read(ctx context.Context, t *testing.T) dbState {
	t.Helper()
	toRole, _ := e.roles()
	db, table := e.w.store.UserShardForTest(e.user)
	suffix := fmt.Sprintf("%04d", table)
	q := strings.Join([]string{
		`SELECT status, order_no, discount_amount, lock_gid, lock_branch, locked_at, used_at FROM coupon_` + suffix + ` WHERE id = ?`,
		`SELECT op, order_no, gid, discount_amount, created_at FROM coupon_ledger WHERE coupon_id = ? ORDER BY id`,
		`SELECT template_id, used FROM daily_use WHERE user_id = ?`,
		`SELECT gid, branch_id, op, reason FROM barrier WHERE gid IN (?,?,?,?)`,
		`SELECT request_id, order_no FROM coupon_return WHERE coupon_id = ? ORDER BY request_id`,
	}, ";\n")
	rows, err := db.QueryContext(ctx, q, e.couponID, e.couponID, e.user, e.gids[0], e.gids[1], e.gids[2], e.gids[3], e.couponID)
	if err != nil {
		t.Fatalf("read state: %v", err)
	}
	defer rows.Close()
	var s dbState
	e.ledgerAt = e.ledgerAt[:0]
	scan := []func() error{
		func() error {
			var order, gid, branch sql.NullString
			var locked, used sql.NullTime
			if err := rows.Scan(&s.Status, &order, &s.Discount, &gid, &branch, &locked, &used); err != nil {
				return err
			}
			s.OrderNo, s.GID, s.Branch = e.roleOf(toRole, order.String), e.roleOf(toRole, gid.String), branch.String
			s.Locked, s.Used = locked.Valid, used.Valid
			return nil
		},
		func() error {
			var l ledgerRow
			var at time.Time
			if err := rows.Scan(&l.Op, &l.OrderNo, &l.GID, &l.Discount, &at); err != nil {
				return err
			}
			l.OrderNo, l.GID = e.roleOf(toRole, l.OrderNo), e.roleOf(toRole, l.GID)
			s.Ledger = append(s.Ledger, l)
			e.ledgerAt = append(e.ledgerAt, at)
			return nil
		},
		func() error {
			var tpl, used int64
			if err := rows.Scan(&tpl, &used); err != nil {
				return err
			}
			s.Daily = true
			if tpl == 0 {
				s.DailyAll += used
			} else {
				s.DailyTemplate += used
			}
			return nil
		},
		func() error {
			var gid, branch, op, reason string
			if err := rows.Scan(&gid, &branch, &op, &reason); err != nil {
				return err
			}
			s.Barrier = append(s.Barrier, e.roleOf(toRole, gid)+"/"+branch+"/"+op+"/"+reason)
			return nil
		},
		func() error {
			var req, order string
			if err := rows.Scan(&req, &order); err != nil {
				return err
			}
			s.Returns = append(s.Returns, e.roleOf(toRole, req)+"/"+e.roleOf(toRole, order))
			return nil
		},
	}
	for i, each := range scan {
		if i > 0 && !rows.NextResultSet() {
			t.Fatalf("read state: result %d of %d missing: %v", i+1, len(scan), rows.Err())
		}
		for rows.Next() {
			if err := each(); err != nil {
				t.Fatalf("read state: %v", err)
			}
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("read state: %v", err)
	}
	sort.Strings(s.Barrier)
	return s
}

// restore writes state s for the execution's fresh coupon, user and gids:
// the rows the service itself wrote on the way to s in another execution.
func (e *execution) restore(ctx context.Context, t *testing.T, s dbState) {
	t.Helper()
	_, fromRole := e.roles()
	db, table := e.w.store.UserShardForTest(e.user)
	suffix := fmt.Sprintf("%04d", table)
	now := time.Now().UTC()
	at := func(set bool) any {
		if set {
			return now
		}
		return nil
	}
	var stmts []string
	var args []any
	exec := func(q string, a ...any) {
		stmts = append(stmts, q)
		args = append(args, a...)
	}
	exec(`UPDATE coupon_`+suffix+` SET status = ?, order_no = ?, discount_amount = ?, lock_gid = ?, lock_branch = ?, locked_at = ?, used_at = ? WHERE id = ?`,
		s.Status, fromRole[s.OrderNo], s.Discount, fromRole[s.GID], s.Branch, at(s.Locked), at(s.Used), e.couponID)
	for _, l := range s.Ledger {
		exec(`INSERT INTO coupon_ledger (op, order_no, gid, branch_id, coupon_id, coupon_code, user_id, template_id, discount_amount, created_at)
 VALUES (?,?,?,?,?,?,?,?,?,?)`, l.Op, fromRole[l.OrderNo], fromRole[l.GID], "01", e.couponID, e.code, e.user, e.w.tpl, l.Discount, now)
	}
	if s.Daily {
		day := now.Format(time.DateOnly)
		exec(`INSERT INTO daily_use (user_id, day, template_id, used, cap) VALUES (?,?,?,?,0), (?,?,0,?,0)`,
			e.user, day, e.w.tpl, s.DailyTemplate, e.user, day, s.DailyAll)
	}
	for _, b := range s.Barrier {
		f := strings.Split(b, "/")
		tt := map[kind]string{kindTCC: "tcc", kindSaga: "saga", kindRefund: "msg"}[specs[slices.IndexFunc(specs, func(sp spec) bool { return sp.name == f[0] })].kind]
		exec(`INSERT INTO barrier (trans_type, gid, branch_id, op, barrier_id, reason) VALUES (?,?,?,?,?,?)`, tt, fromRole[f[0]], f[1], f[2], "01", f[3])
	}
	for _, r := range s.Returns {
		f := strings.Split(r, "/")
		exec(`INSERT INTO coupon_return (request_id, coupon_id, user_id, order_no, reason, created_at) VALUES (?,?,?,?,?,?)`,
			fromRole[f[0]], e.couponID, e.user, fromRole[f[1]], "refund", now)
	}
	// One round trip, one transaction.
	q := "START TRANSACTION;\n" + strings.Join(stmts, ";\n") + ";\nCOMMIT"
	if _, err := db.ExecContext(ctx, q, args...); err != nil {
		t.Fatalf("restore: %v", err)
	}
}
