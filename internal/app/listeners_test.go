package app_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/opencoupon/coupon/internal/app"
	"github.com/opencoupon/coupon/internal/coupontest"
	"github.com/opencoupon/coupon/internal/testenv"
)

// httpConn is one raw keep-alive HTTP/1.1 connection.
type httpConn struct {
	net.Conn
	r *bufio.Reader
}

func dialHTTP(t *testing.T, addr string) *httpConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return &httpConn{Conn: c, r: bufio.NewReader(c)}
}

// get sends GET path with host as Host on the connection and returns the
// status and body.
func (c *httpConn) get(path, host string) (int, string, error) {
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	defer c.SetDeadline(time.Time{})
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", path, host); err != nil {
		return 0, "", err
	}
	resp, err := http.ReadResponse(c.r, nil)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// closedWithin reads c until the server closes it, and fails if that
// takes longer than d.
func closedWithin(t *testing.T, what string, c net.Conn, d time.Duration) {
	t.Helper()
	start := time.Now()
	_ = c.SetReadDeadline(start.Add(d))
	buf := make([]byte, 4096)
	for {
		_, err := c.Read(buf)
		if err == nil {
			continue
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("%s: still open after %s; want the server to close it", what, d)
		}
		t.Logf("%s: closed by the server after %s (%v)", what, time.Since(start).Round(time.Millisecond), err)
		return
	}
}

// listenerValue reads one listener's series of a connection family from
// the service's registry (the ops port may be the listener at its cap).
func listenerValue(t *testing.T, srv *coupontest.Server, family, listener string) float64 {
	t.Helper()
	mfs, err := srv.App.Metrics().Registry.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != family {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "listener" && l.GetValue() == listener {
					if g := m.GetGauge(); g != nil {
						return g.GetValue()
					}
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no series %s{listener=%q}", family, listener)
	return 0
}

// TestOpsServerClosesIdleConnections: a connection that made one request
// to the ops port and then says nothing is closed by the server after the
// idle timeout, and so is one that never finishes its request line.
func TestOpsServerClosesIdleConnections(t *testing.T) {
	srv := coupontest.Start(t, func(c *app.Config) {
		c.Ops = app.OpsServer{IdleTimeout: time.Second, ReadTimeout: 2 * time.Second}
	})
	c := dialHTTP(t, srv.OpsAddr)
	if code, _, err := c.get("/healthz", "localhost"); err != nil || code != http.StatusOK {
		t.Fatalf("GET /healthz: %d %v, want 200", code, err)
	}
	closedWithin(t, "idle ops connection after GET /healthz", c, 10*time.Second)

	slow := dialHTTP(t, srv.OpsAddr)
	if _, err := io.WriteString(slow, "GET /metrics HTTP/1.1\r\nHost: localhost\r\n"); err != nil {
		t.Fatal(err)
	}
	closedWithin(t, "ops connection that never ends its headers", slow, 10*time.Second)
	testenv.Eventually(t, 10*time.Second, "ops connections still counted open", func() bool {
		return listenerValue(t, srv, "coupon_listener_connections", "ops") == 0
	})
}

// TestListenersCapConnections: each of the gRPC, HTTP and ops listeners
// holds at most its cap of connections. Past it a new connection is closed
// at once and counted as refused; the connections already open keep
// working; and a new caller gets in as soon as one of them closes.
func TestListenersCapConnections(t *testing.T) {
	const limit = 3
	srv := coupontest.Start(t, func(c *app.Config) {
		c.Conns = app.Connections{GRPC: limit, HTTP: limit, Ops: limit}
		c.HTTP.Addr = "127.0.0.1:0"
	})
	web, err := srv.App.StartHTTP(context.Background(), srv.Addr)
	if err != nil {
		t.Fatalf("start http: %v", err)
	}
	t.Cleanup(func() { _ = web.Close() })

	for _, l := range []struct{ name, addr, path string }{
		{"ops", srv.OpsAddr, "/healthz"},
		{"http", web.Addr(), "/openapi.json"},
	} {
		t.Run(l.name, func(t *testing.T) {
			var held []*httpConn
			for i := range limit {
				c := dialHTTP(t, l.addr)
				if code, _, err := c.get(l.path, "localhost"); err != nil || code != http.StatusOK {
					t.Fatalf("connection %d: GET %s = %d %v, want 200", i, l.path, code, err)
				}
				held = append(held, c)
			}
			if got := listenerValue(t, srv, "coupon_listener_connections", l.name); got != limit {
				t.Errorf("open connections = %v, want %d", got, limit)
			}
			over := dialHTTP(t, l.addr)
			if code, _, err := over.get(l.path, "localhost"); err == nil {
				t.Fatalf("connection past the cap answered %d, want it closed", code)
			}
			if got := listenerValue(t, srv, "coupon_listener_connections_refused_total", l.name); got < 1 {
				t.Errorf("refused = %v, want at least 1", got)
			}
			for i, c := range held {
				if code, _, err := c.get(l.path, "localhost"); err != nil || code != http.StatusOK {
					t.Errorf("held connection %d after the refusal: %d %v, want 200", i, code, err)
				}
			}
			held[0].Close()
			testenv.Eventually(t, 15*time.Second, "no new connection got in after one closed", func() bool {
				c := dialHTTP(t, l.addr)
				code, _, err := c.get(l.path, "localhost")
				return err == nil && code == http.StatusOK
			})
		})
	}

	t.Run("grpc", func(t *testing.T) {
		// The coupontest client has not dialled; the gateway's client is
		// only dialled by API calls, which this test does not make.
		health := func(ctx context.Context) (*grpc.ClientConn, error) {
			conn, err := grpc.NewClient(srv.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				return nil, err
			}
			_, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
			if err != nil {
				conn.Close()
				return nil, err
			}
			return conn, nil
		}
		var held []*grpc.ClientConn
		for i := range limit {
			conn, err := health(ctxT(t))
			if err != nil {
				t.Fatalf("client %d: health check: %v", i, err)
			}
			t.Cleanup(func() { conn.Close() })
			held = append(held, conn)
		}
		if got := listenerValue(t, srv, "coupon_listener_connections", "grpc"); got != limit {
			t.Errorf("open connections = %v, want %d", got, limit)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		if conn, err := health(ctx); err == nil {
			conn.Close()
			t.Fatal("a client past the cap got an answer")
		}
		cancel()
		if got := listenerValue(t, srv, "coupon_listener_connections_refused_total", "grpc"); got < 1 {
			t.Errorf("refused = %v, want at least 1", got)
		}
		for i, conn := range held {
			if _, err := healthpb.NewHealthClient(conn).Check(ctxT(t), &healthpb.HealthCheckRequest{}); err != nil {
				t.Errorf("held client %d after the refusal: %v", i, err)
			}
		}
		held[0].Close()
		testenv.Eventually(t, 15*time.Second, "no new client got in after one closed", func() bool {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			conn, err := health(ctx)
			if err == nil {
				conn.Close()
			}
			return err == nil
		})
	})
}

// http2Preface is what every HTTP/2 client sends first.
const http2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// TestGRPCClosesIdleConnections: the gRPC listener closes a connection
// that says nothing, one that sends the HTTP/2 preface and nothing else,
// and a real client's connection once it carries no call for the idle
// time, after which that client reconnects on its next call.
func TestGRPCClosesIdleConnections(t *testing.T) {
	srv := coupontest.Start(t, func(c *app.Config) {
		c.Keepalive = app.Keepalive{HandshakeTimeout: time.Second, MaxIdle: time.Second}
	})
	silent := dialHTTP(t, srv.Addr)
	closedWithin(t, "silent connection", silent, 15*time.Second)

	preface := dialHTTP(t, srv.Addr)
	if _, err := io.WriteString(preface, http2Preface); err != nil {
		t.Fatal(err)
	}
	closedWithin(t, "connection that sent only the HTTP/2 preface", preface, 15*time.Second)

	conn, err := grpc.NewClient(srv.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	hc := healthpb.NewHealthClient(conn)
	if _, err := hc.Check(ctxT(t), &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("health check: %v", err)
	}
	testenv.Eventually(t, 20*time.Second, "the idle client's connection is still open on the server", func() bool {
		return listenerValue(t, srv, "coupon_listener_connections", "grpc") == 0
	})
	if _, err := hc.Check(ctxT(t), &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("health check after the idle close: %v", err)
	}
}

// TestPprofOffByDefault: the ops port that Prometheus scrapes serves no
// profiles, and no pprof listener is open unless configured.
func TestPprofOffByDefault(t *testing.T) {
	srv := coupontest.Start(t)
	if addr := srv.App.PprofAddr(); addr != "" {
		t.Errorf("pprof listens on %s by default", addr)
	}
	c := dialHTTP(t, srv.OpsAddr)
	for _, p := range []string{"/debug/pprof/", "/debug/pprof/cmdline", "/debug/pprof/profile?seconds=1", "/debug/pprof/trace?seconds=1"} {
		if code, _, err := c.get(p, "localhost"); err != nil || code != http.StatusNotFound {
			t.Errorf("GET %s on the ops port = %d %v, want 404", p, code, err)
		}
	}
}

// TestPprofRefusesForeignHost: pprof, when on, answers only requests whose
// Host is one of the configured names (a DNS-rebound page sends its own
// name), and refuses a profile longer than its write timeout.
func TestPprofRefusesForeignHost(t *testing.T) {
	srv := coupontest.Start(t, func(c *app.Config) {
		c.Pprof = app.Pprof{Addr: "127.0.0.1:0", WriteTimeout: 2 * time.Second}
	})
	addr := srv.App.PprofAddr()
	if addr == "" {
		t.Fatal("pprof is not listening")
	}
	_, port, _ := net.SplitHostPort(addr)
	for _, host := range []string{"evil.example", "evil.example:" + port, "127.0.0.1.nip.io:" + port, "LOCALHOST.evil.example"} {
		c := dialHTTP(t, addr)
		if code, _, err := c.get("/debug/pprof/", host); err != nil || code != http.StatusForbidden {
			t.Errorf("Host %s: %d %v, want 403", host, code, err)
		}
		c.Close() // pprof's cap is small
	}
	for _, host := range []string{"localhost", "localhost:" + port, "127.0.0.1:" + port, "[::1]:" + port} {
		c := dialHTTP(t, addr)
		code, body, err := c.get("/debug/pprof/", host)
		if err != nil || code != http.StatusOK || !strings.Contains(body, "goroutine") {
			t.Errorf("Host %s: %d %v, want 200 with the profile index", host, code, err)
		}
		c.Close()
	}
	for _, p := range []string{"/debug/pprof/profile?seconds=100000", "/debug/pprof/trace?seconds=30", "/debug/pprof/heap?seconds=30"} {
		c := dialHTTP(t, addr)
		start := time.Now()
		code, body, err := c.get(p, "localhost")
		if err != nil || code != http.StatusBadRequest {
			t.Errorf("GET %s with a 2 s write timeout: %d %.200q %v, want 400", p, code, body, err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("GET %s: the refusal took %s", p, d)
		}
		c.Close()
	}
}
