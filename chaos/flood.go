package chaos

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/opencoupon/coupon/internal/ctxtime"
	couponv1 "github.com/opencoupon/coupon/proto/coupon/v1"
)

// The connection flood (issue 25): idle connections on every port of the
// coupon service, more of them than it has file descriptors, while a caller
// that connected before the flood keeps claiming. The service runs under a
// lowered RLIMIT_NOFILE so that the flood is small and fast; its listener
// caps are set to fit under that limit with room for the MySQL and Redis
// pools, as the sizing rule in docs/operations.md says.
const (
	floodNoFile = 512
	// The caps: 272 of 512 descriptors, the pools and the rest ~100.
	floodGRPCCap = 160
	floodHTTPCap = 96
	floodOpsCap  = 16
	// The flood: 680 connections, each port's beyond its cap. Every other
	// gRPC one sends the HTTP/2 client preface (the magic and an empty
	// SETTINGS frame) and then nothing, the others nothing at all.
	floodGRPC = 330
	floodHTTP = 200
	floodOps  = 150
	// A gRPC connection that has not finished its handshake is closed
	// after floodHandshake; one that finished it and then answers no
	// keepalive ping after floodKeepalive + floodKeepalive. The flood's
	// gRPC slots free within seconds, as they would within the defaults'
	// minute or so on a real deployment. grpc.keepalive.max_idle stays at
	// its default: a short one was seen to keep such connections open past
	// the hold (its graceful GOAWAY waits 5 s for a ping's answer).
	floodHandshake = time.Second
	floodKeepalive = time.Second
	// floodHold is how long the flood's connections are held open. A
	// caller connecting once the flood is up must get a call through
	// before the flood is let go: the service's own timeouts must have
	// freed gRPC slots for it by then.
	floodHold = 4 * time.Second
	// floodDialers bounds the flood's concurrent dials.
	floodDialers = 32
	// minConnectedOK is the share of the connected caller's claims during
	// the flood that must be answered (issued, or refused for a business
	// reason such as SOLD_OUT): a transport failure is what it counts.
	minConnectedOK = 0.99
)

// http2Preface is what a gRPC client sends first: the HTTP/2 connection
// preface (RFC 9113 §3.4), the magic and an empty SETTINGS frame.
var http2Preface = append([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), 0, 0, 0, 4, 0, 0, 0, 0, 0)

// floodEnv is the coupon service's environment for connection-flood: the
// caps and gRPC timeouts above, and the HTTP gateway on a port of its own
// (the stack runs without it) so that all three ports are flooded.
func (s *Stack) floodEnv() []string {
	env := []string{
		fmt.Sprintf("COUPON_GRPC_MAX_CONNECTIONS=%d", floodGRPCCap),
		fmt.Sprintf("COUPON_HTTP_MAX_CONNECTIONS=%d", floodHTTPCap),
		fmt.Sprintf("COUPON_OPS_MAX_CONNECTIONS=%d", floodOpsCap),
		"COUPON_GRPC_HANDSHAKE_TIMEOUT=" + floodHandshake.String(),
		"COUPON_GRPC_KEEPALIVE_TIME=" + floodKeepalive.String(),
		"COUPON_GRPC_KEEPALIVE_TIMEOUT=" + floodKeepalive.String(),
	}
	s.couponHTTP = ""
	if p, err := freePort(); err == nil {
		s.couponHTTP = addr(p)
		env = append(env, "COUPON_HTTP_ADDR="+s.couponHTTP)
	}
	return env
}

// connectionFlood: a caller connects and claims; then the flood opens
// idle connections on the gRPC, HTTP and ops ports, more than the
// service's descriptor limit, holds them, and closes them. It checks
// (invariant 8) that the connected caller's claims kept succeeding, that a
// caller connecting during the flood got a call through before the flood
// was let go, and that the service never ran out of descriptors.
func connectionFlood(ctx context.Context, r *run) error {
	logFrom, err := logSize(r.s.coupon.log)
	if err != nil {
		return err
	}
	// The caller connected before the flood, on a connection of its own.
	cc, err := grpc.NewClient(r.s.couponGRPC, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer cc.Close()
	connected := couponv1.NewCouponServiceClient(cc)
	claimer := &floodClaimer{r: r, cl: connected}
	if err := claimer.warm(ctx); err != nil {
		return err
	}
	if err := r.at(ctx, 0.15); err != nil {
		return nil
	}

	r.s.faults.record(Fault{Target: "coupon", Kind: fmt.Sprintf("connection flood under RLIMIT_NOFILE %d", floodNoFile)})
	claimCtx, stopClaims := context.WithCancel(ctx)
	claimsDone := make(chan struct{})
	go func() {
		defer close(claimsDone)
		claimer.loop(claimCtx)
	}()

	targets := []floodTarget{
		{port: "grpc", addr: r.s.couponGRPC, n: floodGRPC, send: http2Preface},
		{port: "ops", addr: r.s.couponOps, n: floodOps},
	}
	if r.s.couponHTTP != "" {
		targets = append(targets, floodTarget{port: "http", addr: r.s.couponHTTP, n: floodHTTP})
	} else {
		r.note("connection-flood: no free port for the HTTP gateway; only the gRPC and ops ports were flooded")
	}
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	var opened []string
	for i := range targets {
		t := &targets[i]
		t.open(ctx)
		conns = append(conns, t.conns...)
		opened = append(opened, fmt.Sprintf("%s %d of %d (failed: %s)", t.port, len(t.conns), t.n, counts(t.failed)))
	}
	r.note("connection-flood: opened " + strings.Join(opened, ", "))

	// A new caller during the flood, on a connection of its own that
	// retries its connect quickly; WaitForReady holds the call until a
	// connection is up, so a refusal is retried, not failed.
	type answer struct {
		err  error
		took time.Duration
	}
	newcomer := make(chan answer, 1)
	go func() {
		began := time.Now()
		err := r.s.newCaller(ctx, r.tpls[2], floodHold)
		newcomer <- answer{err, time.Since(began)}
	}()

	holdErr := ctxtime.Sleep(ctx, floodHold)
	na := <-newcomer
	open := map[string]int{}
	for i := range targets {
		for _, c := range targets[i].conns {
			if stillOpen(c) {
				open[targets[i].port]++
			}
		}
	}
	for _, c := range conns {
		_ = c.Close()
	}
	conns = nil
	r.note(fmt.Sprintf("connection-flood: flood connections still open after %s: %s; the service closed the rest", floodHold, counts(open)))
	stopClaims()
	<-claimsDone
	if holdErr != nil {
		return nil // the run was cancelled
	}

	if ok, n := claimer.tally(); n == 0 {
		r.edgeFail("connected caller", "made no claim during the flood")
	} else if float64(ok) < minConnectedOK*float64(n) {
		r.edgeFail("connected caller", fmt.Sprintf("%d of %d claims during the flood were answered, want ≥ %.0f%% (failures: %s)",
			ok, n, minConnectedOK*100, counts(claimer.failures())))
	} else {
		r.note(fmt.Sprintf("connection-flood: the connected caller's claims during the flood: %d of %d answered (issued or refused)", ok, n))
	}
	if na.err != nil {
		r.edgeFail("new caller", fmt.Sprintf("no call through in the %s it connected during the flood: %v", floodHold, na.err))
	} else {
		r.note(fmt.Sprintf("connection-flood: a new caller got a call through %s after connecting, the flood still up", na.took.Round(10*time.Millisecond)))
	}
	lines, err := grepLog(r.s.coupon.log, logFrom, "too many open files")
	if err != nil {
		return err
	}
	if len(lines) > 0 {
		r.edgeFail("coupon.log", fmt.Sprintf("%d lines say \"too many open files\"; the first: %s", len(lines), lines[0]))
	}
	if m := r.s.listenerMetrics(ctx); m != "" {
		r.note("connection-flood: " + m)
	}
	return nil
}

// edgeFail records a violation of invariant 8.
func (r *run) edgeFail(id, detail string) {
	r.rec.mu.Lock()
	r.rec.edge = append(r.rec.edge, edgeFinding{id: id, detail: detail})
	r.rec.mu.Unlock()
}

// floodClaimer is the caller connected before the flood: it claims the
// run's direct template with fresh request_ids, one claim after another,
// and counts the answers (recorded for invariants 4 and 5 like any claim).
type floodClaimer struct {
	r  *run
	cl couponv1.CouponServiceClient

	mu     sync.Mutex
	user   int64
	n, ok  int
	failed map[string]int
}

// claimsPerUser stays well below the direct template's per-user limit.
const claimsPerUser = 200

// warm gets one claim through, so that the connection is up before the
// flood.
func (c *floodClaimer) warm(ctx context.Context) error {
	var err error
	if c.user, err = c.r.addUser(ctx, richUser); err != nil {
		return err
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		cr := c.r.claimVia(ctx, c.cl, c.r.next("p"), c.user, c.r.tpls[2])
		if cr.Outcome == acked {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("the connected caller's first claim: %s %s", cr.Outcome, cr.Reason)
		}
		if err := ctxtime.Sleep(ctx, 100*time.Millisecond); err != nil {
			return err
		}
	}
}

func (c *floodClaimer) loop(ctx context.Context) {
	for i := 0; ctx.Err() == nil; i++ {
		if i > 0 && i%claimsPerUser == 0 {
			u, err := c.r.addUser(ctx, richUser)
			if err != nil {
				continue // the flood's end cancels ctx; the deposit is not under test
			}
			c.user = u
		}
		cr := c.r.claimVia(ctx, c.cl, c.r.next("p"), c.user, c.r.tpls[2])
		if ctx.Err() != nil {
			return // cut by the flood's end, not answered by the service
		}
		c.mu.Lock()
		c.n++
		// A business refusal (the template sold out in a short run, the
		// per-user limit) is an answer: the connection worked, which is
		// what this caller is here to show.
		if cr.Outcome == acked || cr.Outcome == refused {
			c.ok++
		} else {
			if c.failed == nil {
				c.failed = map[string]int{}
			}
			c.failed[cr.Outcome.String()+" "+cr.Reason]++
		}
		c.mu.Unlock()
	}
}

func (c *floodClaimer) tally() (ok, n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ok, c.n
}

func (c *floodClaimer) failures() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.failed
}

// newCaller connects to the coupon service and gets one call through
// within bound, its connect retried every few hundred milliseconds.
func (s *Stack) newCaller(ctx context.Context, tpl int64, bound time.Duration) error {
	cc, err := grpc.NewClient(s.couponGRPC, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, MaxDelay: 500 * time.Millisecond},
			MinConnectTimeout: time.Second,
		}))
	if err != nil {
		return err
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(ctx, bound)
	defer cancel()
	_, err = couponv1.NewCouponServiceClient(cc).GetTemplate(as(ctx, tokenApp), &couponv1.GetTemplateRequest{TemplateId: tpl}, grpc.WaitForReady(true))
	return err
}

// floodTarget is one kind of flood connection on one port.
type floodTarget struct {
	port, addr string
	n          int
	send       []byte // written by every other connection once connected
	failed     map[string]int
	conns      []net.Conn // those that connected
}

// open dials t.n connections, floodDialers at a time, into t.conns;
// t.failed counts the others by error.
func (t *floodTarget) open(ctx context.Context) {
	var (
		mu sync.Mutex
		wg sync.WaitGroup
	)
	t.failed = map[string]int{}
	sem := make(chan struct{}, floodDialers)
	d := net.Dialer{Timeout: 2 * time.Second}
	for i := range t.n {
		if ctx.Err() != nil {
			break
		}
		send := t.send
		if i%2 == 1 {
			send = nil
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			c, err := d.DialContext(ctx, "tcp", t.addr)
			if err == nil && send != nil {
				_ = c.SetWriteDeadline(time.Now().Add(time.Second))
				if _, err = c.Write(send); err != nil {
					c.Close()
				}
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				t.failed[dialError(err)]++
				return
			}
			t.conns = append(t.conns, c)
		})
	}
	wg.Wait()
}

// dialError names a dial failure for the report.
func dialError(err error) string {
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, io.EOF), strings.Contains(err.Error(), "reset"):
		return "closed"
	}
	return "error"
}

// stillOpen reports whether the server has not closed c: a read that
// times out finds it open, one that ends finds it closed. Anything the
// server sent (its SETTINGS to a preface) counts as open.
func stillOpen(c net.Conn) bool {
	var b [256]byte
	for range 8 {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Millisecond))
		if _, err := c.Read(b[:]); err != nil {
			var ne net.Error
			return errors.As(err, &ne) && ne.Timeout()
		}
	}
	return true
}

// logSize is where a log file ends now.
func logSize(file string) (int64, error) {
	st, err := os.Stat(file)
	if err != nil {
		return 0, err
	}
	return st.Size(), nil
}

// grepLog returns the lines of file after offset that contain s
// (case-insensitive).
func grepLog(file string, offset int64, s string) ([]string, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return nil, err
	}
	b, err := io.ReadAll(f)
	if err != nil {
		return nil, err
	}
	var out []string
	want := []byte(strings.ToLower(s))
	for _, line := range bytes.Split(b, []byte("\n")) {
		if bytes.Contains(bytes.ToLower(line), want) {
			out = append(out, string(line))
		}
	}
	return out, nil
}

// listenerMetrics reads the coupon service's per-listener connection
// metrics once the flood has gone: the ops port may still be at its cap
// for a moment, so it is asked for a few seconds.
func (s *Stack) listenerMetrics(ctx context.Context) string {
	deadline := time.Now().Add(5 * time.Second)
	for {
		if m, err := s.scrapeListeners(ctx); err == nil {
			return m
		}
		if time.Now().After(deadline) || ctxtime.Sleep(ctx, 200*time.Millisecond) != nil {
			return ""
		}
	}
}

func (s *Stack) scrapeListeners(ctx context.Context) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+s.couponOps+"/metrics", nil)
	if err != nil {
		return "", err
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return "", err
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "coupon_listener_connections_refused_total{") {
			out = append(out, strings.TrimPrefix(line, "coupon_listener_connections_refused_total"))
		}
	}
	if len(out) == 0 {
		return "the service exports no coupon_listener_connections_refused_total", nil
	}
	return "connections refused by listener " + strings.Join(out, ", "), nil
}
