package relay_test

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/opencoupon/coupon/internal/app"
	"github.com/opencoupon/coupon/internal/coupontest"
	"github.com/opencoupon/coupon/internal/natstest"
	"github.com/opencoupon/coupon/internal/relay"
	"github.com/opencoupon/coupon/participant"
	couponmysql "github.com/opencoupon/coupon/participant/mysql"
	couponeventsv1 "github.com/opencoupon/coupon/proto/coupon/events/v1"
	couponv1 "github.com/opencoupon/coupon/proto/coupon/v1"
)

// fixture is a coupon service with events on, relaying to its own
// nats-server, and one approved template.
type fixture struct {
	srv      *coupontest.Server
	ns       *natstest.Server
	template int64
}

func start(t *testing.T) *fixture {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test")
	}
	ns := natstest.Start(t)
	srv := coupontest.Start(t, func(c *app.Config) {
		c.Events = relay.Config{URL: ns.URL, Poll: 10 * time.Millisecond, AckTimeout: 2 * time.Second, LeaseTTL: 2 * time.Second}
	})
	ctx := context.Background()
	now := time.Now()
	campaign, err := srv.Admin.CreateCampaign(ctx, &couponv1.CreateCampaignRequest{
		Name: "events", CampaignType: "PROMOTION", CreatedBy: "alice",
		StartTime: timestamppb.New(now.Add(-time.Hour)), EndTime: timestamppb.New(now.Add(30 * 24 * time.Hour)),
	})
	if err != nil {
		t.Fatalf("CreateCampaign: %v", err)
	}
	tpl, err := srv.Admin.CreateTemplate(ctx, &couponv1.CreateTemplateRequest{
		CampaignId: campaign.GetId(), Name: "5 off 50", CouponType: couponv1.CouponTemplate_FIXED_AMOUNT,
		DiscountAmount: 500, MinOrderAmount: 5000, TotalStock: 10_000_000, PerUserLimit: 100,
		ValidFrom: timestamppb.New(now.Add(-time.Minute)), ValidUntil: timestamppb.New(now.Add(48 * time.Hour)),
		CreatedBy: "alice",
	})
	if err != nil {
		t.Fatalf("CreateTemplate: %v", err)
	}
	if _, err := srv.AdminAs(coupontest.TokenBob).ApproveTemplate(ctx, &couponv1.ApproveTemplateRequest{TemplateId: tpl.GetId(), Version: tpl.GetVersion(), ApprovedBy: "bob"}); err != nil {
		t.Fatalf("ApproveTemplate: %v", err)
	}
	return &fixture{srv: srv, ns: ns, template: tpl.GetId()}
}

// claim claims n coupons for users 1..users, from workers callers at once.
func (f *fixture) claim(t *testing.T, n, users, workers int, tag string) []*participant.Coupon {
	t.Helper()
	out := make([]*participant.Coupon, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				c, err := f.srv.App.Service().Claim(context.Background(), participant.ClaimRequest{
					RequestID: fmt.Sprintf("%s-%d", tag, i), UserID: int64(1 + i%users), TemplateID: f.template})
				if err != nil {
					errs <- fmt.Errorf("claim %d: %w", i, err)
					return
				}
				out[i] = c
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	return out
}

func order(c *participant.Coupon, no string) participant.BranchRequest {
	return participant.BranchRequest{UserID: c.UserID, Code: c.Code,
		Order: participant.Order{OrderNo: no, UserID: c.UserID, Amount: 10000, Currency: "CNY"}}
}

func br(gid, op string) participant.Branch {
	return participant.Branch{TransType: "tcc", GID: gid, BranchID: "01", Op: op}
}

// lifecycle runs TCC, Saga and return flows over cs, each call twice (as
// DTM's retries would), plus Tries that are refused.
func (f *fixture) lifecycle(t *testing.T, cs []*participant.Coupon) {
	t.Helper()
	ctx := context.Background()
	svc := f.srv.App.Service()
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	for i, c := range cs {
		gid := fmt.Sprintf("g-%s", c.Code)
		no := "o-" + c.Code
		switch i % 5 {
		case 0: // TCC commit, Confirm retried
			for range 2 {
				_, err := svc.Lock(ctx, br(gid, "try"), order(c, no))
				must("lock", err)
			}
			for range 2 {
				_, err := svc.Consume(ctx, br(gid, "confirm"), order(c, no))
				must("consume", err)
			}
		case 1: // TCC rollback, Cancel retried
			_, err := svc.Lock(ctx, br(gid, "try"), order(c, no))
			must("lock", err)
			for range 2 {
				_, err := svc.Unlock(ctx, br(gid, "cancel"), order(c, no))
				must("unlock", err)
			}
		case 2: // Saga use, reverted
			s := participant.Branch{TransType: "saga", GID: gid, BranchID: "01", Op: "action"}
			_, err := svc.Use(ctx, s, order(c, no))
			must("use", err)
			s.Op = "compensate"
			_, err = svc.Revert(ctx, s, order(c, no))
			must("revert", err)
		case 3: // TCC commit, then a refund returns it (twice)
			_, err := svc.Lock(ctx, br(gid, "try"), order(c, no))
			must("lock", err)
			_, err = svc.Consume(ctx, br(gid, "confirm"), order(c, no))
			must("consume", err)
			for range 2 {
				_, err = svc.Return(ctx, participant.Branch{}, participant.ReturnRequest{RequestID: "r-" + c.Code, UserID: c.UserID, Code: c.Code, OrderNo: no, Reason: "refund"})
				must("return", err)
			}
		case 4: // a refused Try (order below the minimum) changes nothing
			req := order(c, no)
			req.Order.Amount = 100
			if _, err := svc.Lock(ctx, br(gid, "try"), req); err == nil {
				t.Fatalf("lock of an order below the minimum: want a refusal")
			}
		}
	}
}

// collect reads every event in the stream, in stream order.
func collect(t *testing.T, url string) []*couponeventsv1.Event {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := js.Stream(ctx, relay.DefaultStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	var out []*couponeventsv1.Event
	for uint64(len(out)) < info.State.Msgs {
		batch, err := cons.Fetch(1000, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for m := range batch.Messages() {
			var e couponeventsv1.Event
			if err := proto.Unmarshal(m.Data(), &e); err != nil {
				t.Fatal(err)
			}
			if got := m.Headers().Get(jetstream.MsgIDHeader); got != e.GetId() {
				t.Fatalf("message id %q, event id %q", got, e.GetId())
			}
			if m.Subject() != relay.DefaultSubjectPrefix+e.GetType() {
				t.Fatalf("subject %q for event type %q", m.Subject(), e.GetType())
			}
			out = append(out, &e)
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			t.Fatal(err)
		}
	}
	return out
}

// drained waits until every outbox is empty.
func (f *fixture) drained(t *testing.T) {
	t.Helper()
	ob := f.srv.App.Store().Outbox
	deadline := time.Now().Add(2 * time.Minute)
	for {
		total := int64(0)
		for src := range ob.Sources() {
			n, _, err := ob.Backlog(context.Background(), src)
			if err != nil {
				t.Fatal(err)
			}
			total += n
		}
		if total == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("outbox still holds %d events", total)
		}
		time.Sleep(20 * time.Millisecond) // polling the outbox until the relay empties it
	}
}

// check verifies the stream against the coupon tables: every event once
// after deduplication, each coupon's events numbered 1..n in stream order,
// n the coupon's event count, and the last event's state the coupon's.
func (f *fixture) check(t *testing.T, events []*couponeventsv1.Event, cs []*participant.Coupon) map[string]int {
	t.Helper()
	seen := map[string]bool{}
	last := map[string]*couponeventsv1.Event{}
	types := map[string]int{}
	for _, e := range events {
		if seen[e.GetId()] {
			continue // a resend past the duplicate window: consumers drop it by ID
		}
		seen[e.GetId()] = true
		types[e.GetType()]++
		if e.GetCouponCode() == "" {
			continue
		}
		prev := last[e.GetCouponCode()]
		want := int64(1)
		if prev != nil {
			want = prev.GetSequence() + 1
		}
		if e.GetSequence() != want {
			t.Fatalf("coupon %s: event %s (%s) arrived with sequence %d, want %d", e.GetCouponCode(), e.GetId(), e.GetType(), e.GetSequence(), want)
		}
		last[e.GetCouponCode()] = e
	}
	stateAfter := map[string]participant.CouponStatus{
		participant.EventClaimed: participant.CouponAvailable, participant.EventLocked: participant.CouponLocked,
		participant.EventUsed: participant.CouponUsed, participant.EventReleased: participant.CouponAvailable,
		participant.EventReturned: participant.CouponAvailable, participant.EventExpired: participant.CouponExpired,
	}
	for _, c := range cs {
		now, err := f.srv.App.Store().Coupons.ByCode(context.Background(), c.UserID, c.Code)
		if err != nil {
			t.Fatal(err)
		}
		e := last[c.Code]
		if e == nil {
			t.Fatalf("coupon %s: no event", c.Code)
		}
		if e.GetSequence() != now.EventSeq {
			t.Errorf("coupon %s: last event %d, the coupon counts %d", c.Code, e.GetSequence(), now.EventSeq)
		}
		if st := stateAfter[e.GetType()]; st != now.Status {
			t.Errorf("coupon %s: last event %s, the coupon is %v", c.Code, e.GetType(), now.Status)
		}
	}
	if len(last) != len(cs) {
		t.Errorf("events of %d coupons, %d claimed", len(last), len(cs))
	}
	return types
}

// TestEventsEveryChangeOnceInOrder: claims and TCC, Saga and return flows,
// with every call retried and some Tries refused, while nats-server is
// killed and restarted, a relay in a process of its own is SIGKILLed
// twice while it publishes, and a relay with a flaky delete runs beside
// the service's: after draining, each change has exactly one event, in
// order per coupon, agreeing with the coupon tables; a refused Try or a
// repeated branch emits none.
func TestEventsEveryChangeOnceInOrder(t *testing.T) {
	f := start(t)
	// A second relay whose deletes fail now and then (as if killed after
	// JetStream stored a batch and before the delete), holding every lease
	// at once: the service's relay and this one publish side by side.
	flaky := &flakyOutbox{Outbox: f.srv.App.Store().Outbox}
	r2, err := relay.New(relay.Config{URL: f.ns.URL, Poll: 5 * time.Millisecond, Batch: 50, AckTimeout: 2 * time.Second}, flaky, grantAll{}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	rctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { r2.Run(rctx) })
	defer func() { stop(); wg.Wait() }()

	n := 1500 // COUPON_EVENTS_TEST_CLAIMS scales it up (100000 for the run)
	if v, err := strconv.Atoi(os.Getenv("COUPON_EVENTS_TEST_CLAIMS")); err == nil && v > n {
		n = v
	}
	users := max(300, n/20)
	cs := f.claim(t, n, users, 16, "a")
	// Retried claims answer with the coupon already issued and write nothing.
	again := f.claim(t, 100, users, 16, "a")
	for i, c := range again {
		if c.Code != cs[i].Code {
			t.Fatalf("claim %d retried: coupon %s, first %s", i, c.Code, cs[i].Code)
		}
	}
	// A third relay, in a process of its own, SIGKILLed twice while it
	// publishes.
	p := f.startRelayProcess(t)
	f.lifecycle(t, cs[:500])
	p.killWhilePublishing(t)
	f.ns.Kill() // events wait in the outbox meanwhile; claims go on
	more := f.claim(t, 500, users, 16, "b")
	f.lifecycle(t, more[:100])
	p = f.startRelayProcess(t)
	f.ns.Restart()
	p.killWhilePublishing(t)
	p = f.startRelayProcess(t)
	cs = append(cs, more...)
	// The expiry sweep, two days on: every coupon still AVAILABLE expires.
	expired := 0
	ex := f.srv.App.Store().Expiry
	for _, tables := range ex.ShardTables() {
		for _, table := range tables {
			for {
				n, err := ex.ExpireBatch(context.Background(), table, time.Now().Add(72*time.Hour), 100)
				if err != nil {
					t.Fatal(err)
				}
				if expired += n; n == 0 {
					break
				}
			}
		}
	}
	f.drained(t)
	stop()
	wg.Wait()
	p.kill()

	events := collect(t, f.ns.URL)
	types := f.check(t, events, cs)
	// n+500 claims; of the 600 coupons through lifecycle: 120 TCC commits
	// (locked, used), 120 rollbacks (locked, released), 120 Saga reverts
	// (locked, used, released), 120 returns (locked, used, returned), 120
	// refused Tries (none).
	want := map[string]int{
		participant.EventClaimed: n + 500, participant.EventLocked: 480, participant.EventUsed: 360,
		participant.EventReleased: 240, participant.EventReturned: 120,
		participant.EventTemplateChanged: 2, // created, approved
		participant.EventExpired:         expired,
	}
	if expired < n/2 {
		t.Errorf("the sweep expired %d coupons, want most of the %d", expired, n+500)
	}
	for typ, n := range want {
		if types[typ] != n {
			t.Errorf("%s: %d events, want %d", typ, types[typ], n)
		}
	}
	if flaky.failed.Load() == 0 {
		t.Errorf("the flaky relay never failed a delete: the resend path was not exercised")
	}
}

// relayProcessEnv carries a relay process's configuration.
const relayProcessEnv = "COUPON_TEST_RELAY_PROCESS"

type relayProcessConfig struct {
	NATS           string
	MainDSN        string
	ShardDSNs      []string
	TablesPerShard int
}

// relayProcess is a relay running in a child process (this test binary,
// in TestRelayProcess), which prints a line per batch it publishes.
type relayProcess struct {
	cmd       *exec.Cmd
	published chan int
}

func (f *fixture) startRelayProcess(t *testing.T) *relayProcess {
	t.Helper()
	cfg, _ := json.Marshal(relayProcessConfig{NATS: f.ns.URL, MainDSN: f.srv.Config.MySQL.MainDSN,
		ShardDSNs: f.srv.Config.MySQL.ShardDSNs, TablesPerShard: f.srv.Config.MySQL.TablesPerShard})
	cmd := exec.Command(os.Args[0], "-test.run=^TestRelayProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), relayProcessEnv+"="+string(cfg))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &relayProcess{cmd: cmd, published: make(chan int, 1)}
	t.Cleanup(p.kill)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if n, ok := strings.CutPrefix(sc.Text(), "published "); ok {
				k, _ := strconv.Atoi(n)
				select {
				case p.published <- k:
				default:
				}
			}
		}
	}()
	return p
}

// killWhilePublishing SIGKILLs the process once it has published a batch
// and is on to the next.
func (p *relayProcess) killWhilePublishing(t *testing.T) {
	t.Helper()
	select {
	case <-p.published:
	case <-time.After(time.Minute):
		t.Fatal("the relay process published nothing within a minute")
	}
	p.kill()
}

func (p *relayProcess) kill() {
	_ = p.cmd.Process.Kill() // SIGKILL
	_ = p.cmd.Wait()
}

// TestRelayProcess is the relay process of startRelayProcess; run
// directly, it does nothing.
func TestRelayProcess(t *testing.T) {
	raw := os.Getenv(relayProcessEnv)
	if raw == "" {
		t.Skip("the relay process of TestEventsEveryChangeOnceInOrder")
	}
	var cfg relayProcessConfig
	if err := json.Unmarshal([]byte(raw), &cfg); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	st, err := couponmysql.Open(ctx, couponmysql.Config{MainDSN: cfg.MainDSN, ShardDSNs: cfg.ShardDSNs,
		TablesPerShard: cfg.TablesPerShard, MaxOpenConns: 4})
	if err != nil {
		t.Fatal(err)
	}
	r, err := relay.New(relay.Config{URL: cfg.NATS, Batch: 20, AckTimeout: 2 * time.Second}, st.Outbox, grantAll{}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	for { // until SIGKILLed
		for src := range st.Outbox.Sources() {
			// An error (NATS down or restarting) is retried next round.
			if n, _ := r.Drain(ctx, src); n > 0 {
				fmt.Printf("published %d\n", n)
			}
		}
		time.Sleep(time.Millisecond) // an idle relay's poll
	}
}

// flakyOutbox fails every third delete without deleting.
type flakyOutbox struct {
	relay.Outbox
	calls, failed atomic.Int64
}

func (o *flakyOutbox) Delete(ctx context.Context, src int, rows []int64) error {
	if len(rows) > 0 && o.calls.Add(1)%3 == 0 {
		o.failed.Add(1)
		return errors.New("killed before the delete")
	}
	return o.Outbox.Delete(ctx, src, rows)
}

// grantAll grants every lease to every caller.
type grantAll struct{}

func (grantAll) Lock(context.Context, string, time.Duration) (func(), bool, error) {
	return func() {}, true, nil
}

var _ relay.Outbox = (*couponmysql.Outbox)(nil)

// TestRelaySetsAsideUnreadableRow: a row that is not an event list (here
// written by hand between two good ones, in one transaction) is moved to
// coupon_outbox_set_aside, with its reason, and counted; the rows around
// it are published, so one bad row does not stall its outbox for good.
func TestRelaySetsAsideUnreadableRow(t *testing.T) {
	f := start(t)
	db, err := sql.Open("mysql", f.srv.Config.MySQL.ShardDSNs[0])
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	row := func(code string) []byte {
		return couponmysql.EncodeEvents([]couponmysql.OutboxEvent{{EventID: code + ".1", Type: participant.EventClaimed,
			CouponID: 1, CouponCode: code, UserID: 1, TemplateID: f.template, Seq: 1, OccurredAt: time.Now()}})
	}
	ctx := context.Background()
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	var bad int64
	for _, b := range [][]byte{row("SETASIDE0"), {0xff, 0x01, 0x02}, row("SETASIDE2")} {
		res, err := tx.ExecContext(ctx, `INSERT INTO coupon_outbox (events, n, occurred_at) VALUES (?, 1, ?)`, b, time.Now().UTC())
		if err != nil {
			t.Fatal(err)
		}
		if b[0] == 0xff {
			if bad, err = res.LastInsertId(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	f.drained(t)

	published := map[string]bool{}
	for _, e := range collect(t, f.ns.URL) {
		published[e.GetId()] = true
	}
	if !published["SETASIDE0.1"] || !published["SETASIDE2.1"] {
		t.Errorf("published %v; want the events of the rows before and after the bad one", published)
	}
	var id int64
	var reason string
	if err := db.QueryRowContext(ctx, `SELECT id, reason FROM coupon_outbox_set_aside`).Scan(&id, &reason); err != nil {
		t.Fatalf("the row set aside: %v", err)
	}
	if id != bad || !strings.Contains(reason, "not an event list") {
		t.Errorf("set aside row %d (%q); want row %d, not an event list", id, reason, bad)
	}
	if m := f.srv.Metrics(t); !strings.Contains(m, `coupon_events_set_aside_total{outbox="shard_0"} 1`) {
		t.Errorf("/metrics lacks coupon_events_set_aside_total{outbox=\"shard_0\"} 1")
	}
}
