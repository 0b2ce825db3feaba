package webhook_test

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	_ "github.com/go-sql-driver/mysql" // driver
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/opencoupon/coupon/internal/natstest"
	"github.com/opencoupon/coupon/internal/testenv"
	"github.com/opencoupon/coupon/internal/webhook"
	couponeventsv1 "github.com/opencoupon/coupon/proto/coupon/events/v1"
	migrations "github.com/opencoupon/coupon/sql"
)

// db is this package's own database, with the webhook tables, dropped when
// the tests end. The tests share it one at a time: none is parallel, and
// each starts by emptying the tables (a dispatcher serves every endpoint in
// its table).
var db *sql.DB

// wait bounds every poll: generous, as the machine may be loaded.
const wait = 60 * time.Second

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	name := "webhook_" + hex.EncodeToString(b)
	root, err := sql.Open("mysql", testenv.MySQLServer())
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer root.Close()
	if _, err := root.Exec("CREATE DATABASE `" + name + "` CHARACTER SET utf8mb4"); err != nil {
		fmt.Fprintf(os.Stderr, "create database %s: %v (is MariaDB running? make deps)\n", name, err)
		return 1
	}
	if os.Getenv("COUPON_TEST_KEEP") == "" {
		defer root.Exec("DROP DATABASE IF EXISTS `" + name + "`") //nolint:errcheck // best effort
	}
	db, err = sql.Open("mysql", testenv.DSN(name))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer db.Close()
	if err := migrate(db); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}

// migrate applies sql/main/0006_webhooks.sql, twice: it must be rerunnable.
func migrate(db *sql.DB) error {
	src, err := fs.ReadFile(migrations.FS, "main/0006_webhooks.sql")
	if err != nil {
		return err
	}
	for range 2 {
		var stmt strings.Builder
		for _, line := range strings.Split(string(src), "\n") {
			if t := strings.TrimSpace(line); t == "" || strings.HasPrefix(t, "--") {
				continue
			}
			stmt.WriteString(line + "\n")
			if strings.HasSuffix(strings.TrimSpace(line), ";") {
				if _, err := db.Exec(stmt.String()); err != nil {
					return fmt.Errorf("0006_webhooks.sql: %w", err)
				}
				stmt.Reset()
			}
		}
	}
	return nil
}

// mustStore empties the webhook tables and returns a Store over them.
func mustStore(tb testing.TB, cfg webhook.StoreConfig) *webhook.Store {
	tb.Helper()
	for _, table := range []string{"webhook_delivery", "webhook_endpoint"} {
		if _, err := db.Exec("DELETE FROM " + table); err != nil {
			tb.Fatal(err)
		}
	}
	return webhook.NewStore(db, cfg)
}

// mustJetStream starts a nats-server with the COUPON_EVENTS stream.
func mustJetStream(tb testing.TB) jetstream.JetStream {
	tb.Helper()
	srv := natstest.Start(tb)
	nc, err := nats.Connect(srv.URL)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: "COUPON_EVENTS", Subjects: []string{"coupon.events.>"}, Duplicates: time.Minute,
	}); err != nil {
		tb.Fatal(err)
	}
	return js
}

func event(id, typ string) *couponeventsv1.Event {
	return &couponeventsv1.Event{
		Id: id, Type: typ, SchemaVersion: 1, OccurredAt: timestamppb.New(time.Unix(1_800_000_000, 0)),
		CouponCode: strings.Split(id, ".")[0], CouponId: 42, UserId: 7, TemplateId: 3, Sequence: 1,
	}
}

// publish publishes ev as the relay does and returns the stream's ack.
func publish(tb testing.TB, js jetstream.JetStream, ev *couponeventsv1.Event) *jetstream.PubAck {
	tb.Helper()
	data, err := proto.Marshal(ev)
	if err != nil {
		tb.Fatal(err)
	}
	msg := nats.NewMsg(webhook.SubjectPrefix + ev.GetType())
	msg.Data = data
	msg.Header.Set(jetstream.MsgIDHeader, ev.GetId())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ack, err := js.PublishMsg(ctx, msg)
	if err != nil {
		tb.Fatalf("publish %s: %v", ev.GetId(), err)
	}
	return ack
}

// request is one request a receiver got.
type request struct {
	id, typ, sig, contentType string
	body                      []byte
	at                        time.Time
}

// receiver is a webhook endpoint: respond answers its n-th request (from 1).
type receiver struct {
	*httptest.Server
	respond func(n int, r request) int
	mu      sync.Mutex
	reqs    []request
}

func newReceiver(tb testing.TB, respond func(n int, r request) int) *receiver {
	tb.Helper()
	rc := &receiver{respond: respond}
	rc.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		req := request{
			id: r.Header.Get(webhook.HeaderEventID), typ: r.Header.Get(webhook.HeaderEventType),
			sig: r.Header.Get(webhook.HeaderSignature), contentType: r.Header.Get("Content-Type"), body: body, at: time.Now(),
		}
		rc.mu.Lock()
		rc.reqs = append(rc.reqs, req)
		n := len(rc.reqs)
		rc.mu.Unlock()
		w.WriteHeader(rc.respond(n, req))
	}))
	tb.Cleanup(rc.Close)
	return rc
}

func ok(int, request) int { return http.StatusNoContent }

func (rc *receiver) got() []request {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]request(nil), rc.reqs...)
}

// ids are the event ids received, in order.
func (rc *receiver) ids() []string {
	var out []string
	for _, r := range rc.got() {
		out = append(out, r.id)
	}
	return out
}

func (rc *receiver) count(id string) int {
	n := 0
	for _, r := range rc.got() {
		if r.id == id {
			n++
		}
	}
	return n
}

// dispatcher is a running Dispatcher and what the tests look into.
type dispatcher struct {
	*webhook.Dispatcher
	reg  *prometheus.Registry
	stop func()
}

// runDispatcher starts a Dispatcher's Run and returns once it answers
// Refresh. stop (also run at cleanup) cancels Run and checks it returns.
func runDispatcher(tb testing.TB, js jetstream.JetStream, store *webhook.Store, cfg webhook.Config) *dispatcher {
	tb.Helper()
	reg := prometheus.NewRegistry()
	log := slog.New(slog.NewTextHandler(tbWriter{tb}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	d, err := webhook.New(js, store, log, reg, cfg)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- d.Run(ctx) }()
	stop := sync.OnceFunc(func() {
		cancel()
		select {
		case err := <-errc:
			if err != nil {
				tb.Errorf("Run = %v; want nil after cancel", err)
			}
		case <-time.After(wait):
			tb.Errorf("Run did not return within %s of its cancellation", wait)
		}
	})
	tb.Cleanup(stop)
	testenv.Eventually(tb, wait, "the dispatcher to answer Refresh", func() bool {
		return d.Refresh(context.Background()) == nil
	})
	return &dispatcher{Dispatcher: d, reg: reg, stop: stop}
}

func (d *dispatcher) refresh(tb testing.TB) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := d.Refresh(ctx); err != nil {
		tb.Fatalf("Refresh: %v", err)
	}
}

// metric returns the value of counter name (with label outcome when not
// empty) in d's registry.
func (d *dispatcher) metric(tb testing.TB, name, outcome string) float64 {
	tb.Helper()
	mfs, err := d.reg.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if outcome != "" && (len(m.GetLabel()) != 1 || m.GetLabel()[0].GetValue() != outcome) {
				continue
			}
			return m.GetCounter().GetValue()
		}
	}
	tb.Fatalf("no metric %s{outcome=%q}", name, outcome)
	return 0
}

func mustEndpoint(tb testing.TB, store *webhook.Store, url string, types ...string) (webhook.Endpoint, string) {
	tb.Helper()
	ep, secret, err := store.CreateEndpoint(context.Background(), url, types, "test-admin")
	if err != nil {
		tb.Fatalf("CreateEndpoint(%s): %v", url, err)
	}
	return ep, secret
}

func mustDeliveries(tb testing.TB, store *webhook.Store, endpointID int64) []webhook.Delivery {
	tb.Helper()
	ds, err := store.ListDeliveries(context.Background(), endpointID, webhook.Page{Limit: 500})
	if err != nil {
		tb.Fatal(err)
	}
	return ds
}

// tbWriter sends log lines to the test's log.
type tbWriter struct{ tb testing.TB }

func (w tbWriter) Write(p []byte) (int, error) {
	w.tb.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}
