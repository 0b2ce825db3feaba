package app

import (
	"errors"
	"log/slog"
	"net"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"

	"github.com/opencoupon/coupon/internal/metrics"
)

// Connection caps per listener. Their sum, with the MySQL and Redis pools,
// must stay well below the process's descriptor limit (ulimit -n): a
// process at its limit cannot open pool connections, and every caller
// fails, not only the new ones. A gRPC connection holds tens of kilobytes
// of buffers once its handshake is done, so the gRPC cap also bounds memory.
const (
	DefaultGRPCMaxConns  = 2048
	DefaultHTTPMaxConns  = 1024
	DefaultOpsMaxConns   = 32
	DefaultPprofMaxConns = 4
)

// Timeouts of the gRPC and ops listeners.
const (
	DefaultHandshakeTimeout  = 10 * time.Second
	DefaultGRPCMaxIdle       = 2 * time.Minute
	DefaultKeepaliveTime     = time.Minute
	DefaultKeepaliveTimeout  = 20 * time.Second
	DefaultKeepaliveMinTime  = 10 * time.Second
	DefaultOpsReadTimeout    = 10 * time.Second
	DefaultOpsWriteTimeout   = 30 * time.Second
	DefaultOpsIdleTimeout    = 60 * time.Second
	DefaultPprofWriteTimeout = 60 * time.Second
)

// Connections bounds each listener's open connections. Zero takes the
// default; negative means no cap.
type Connections struct {
	GRPC, HTTP, Ops int
}

// Keepalive is how the gRPC listener closes connections that do nothing.
// Zero durations take the defaults.
type Keepalive struct {
	// HandshakeTimeout bounds the TLS handshake and the HTTP/2 preface and
	// settings of a new connection: one that never finishes is closed.
	HandshakeTimeout time.Duration
	// MaxIdle closes a connection with no call for this long (GOAWAY; a
	// well-behaved client reconnects on its next call).
	MaxIdle time.Duration
	// Time and Timeout: after Time without traffic the server pings, and
	// closes the connection if the ping is not answered within Timeout.
	Time, Timeout time.Duration
	// MinTime is the most often a client may ping; one that pings more
	// often is disconnected (too_many_pings).
	MinTime time.Duration
}

// OpsServer bounds the ops listener's requests and idle connections.
// Zero durations take the defaults.
type OpsServer struct {
	ReadTimeout, WriteTimeout, IdleTimeout time.Duration
}

// grpcConnOptions are the server options that close idle, silent and
// never-handshaked connections.
func grpcConnOptions(k Keepalive) []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ConnectionTimeout(orDefault(k.HandshakeTimeout, DefaultHandshakeTimeout)),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			MaxConnectionIdle: orDefault(k.MaxIdle, DefaultGRPCMaxIdle),
			Time:              orDefault(k.Time, DefaultKeepaliveTime),
			Timeout:           orDefault(k.Timeout, DefaultKeepaliveTimeout),
		}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime: orDefault(k.MinTime, DefaultKeepaliveMinTime),
			// Clients that keep a connection warm between calls may ping;
			// MaxIdle still closes a connection that carries no call.
			PermitWithoutStream: true,
		}),
	}
}

// capOf resolves a configured cap: 0 is def, negative is none (0).
func capOf(n, def int) int {
	switch {
	case n == 0:
		return def
	case n < 0:
		return 0
	}
	return n
}

// logEvery bounds the "at its connection cap" log line to one per
// listener per interval.
const logEvery = 10 * time.Second

// capListener caps the open connections of one listener. Past the cap a
// new connection is accepted and closed at once: the caller sees a clean
// close and retries, the process holds no descriptor for it, and the
// connections already open keep working (Envoy's per-listener
// max_connections; netutil.LimitListener would instead leave callers
// queued in the kernel behind connections that may be floods).
type capListener struct {
	net.Listener
	name  string
	limit int           // 0: no cap
	slots chan struct{} // nil when no cap
	m     metrics.Listener
	log   *slog.Logger

	mu       sync.Mutex
	logged   time.Time // last "at its cap" line
	fdLogged time.Time // last "out of file descriptors" line
	refused  int       // since the last "at its cap" line
}

// limitConns wraps l with the cap (0: none) and the listener's metrics.
func limitConns(l net.Listener, name string, limit int, m *metrics.Metrics, log *slog.Logger) net.Listener {
	c := &capListener{Listener: l, name: name, limit: limit, m: m.Listener(name, limit), log: log}
	if limit > 0 {
		c.slots = make(chan struct{}, limit)
	}
	return c
}

func (l *capListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			if isFDExhausted(err) && l.due(&l.fdLogged) {
				// The server retries the accept; one line per interval.
				l.log.Error("listener out of file descriptors: lower the connection caps or raise ulimit -n",
					"listener", l.name, "err", err)
			}
			return nil, err
		}
		if l.slots != nil {
			select {
			case l.slots <- struct{}{}:
			default:
				_ = c.Close()
				l.m.Refused.Inc()
				l.noteRefused()
				continue
			}
		}
		l.m.Open.Inc()
		return &cappedConn{Conn: c, release: l.release}, nil
	}
}

func (l *capListener) release() {
	l.m.Open.Dec()
	if l.slots != nil {
		<-l.slots
	}
}

// due reports whether a line stamped at *last may be logged now, and if
// so stamps it.
func (l *capListener) due(last *time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	if now.Sub(*last) < logEvery {
		return false
	}
	*last = now
	return true
}

// noteRefused logs that the cap is reached, at most once per logEvery,
// with the number refused since the last line.
func (l *capListener) noteRefused() {
	l.mu.Lock()
	l.refused++
	l.mu.Unlock()
	if !l.due(&l.logged) {
		return
	}
	l.mu.Lock()
	n := l.refused
	l.refused = 0
	l.mu.Unlock()
	l.log.Warn("listener at its connection cap: refusing new connections",
		"listener", l.name, "cap", l.limit, "refused", n, "addr", l.Addr().String())
}

// cappedConn gives its slot back once, when it is closed.
type cappedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *cappedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

func isFDExhausted(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE)
}

// checkDescriptors warns when the connection caps and the pools do not fit
// in the process's descriptor limit with room to spare: a flood would then
// take the process to EMFILE before the caps refuse it.
func checkDescriptors(log *slog.Logger, caps, pools int) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return
	}
	need := caps + pools + descriptorReserve
	if uint64(need) > lim.Cur {
		log.Warn("connection caps and pools exceed the descriptor limit: lower grpc/http/ops.max_connections or raise ulimit -n",
			"limit", lim.Cur, "caps", caps, "pools", pools, "reserve", descriptorReserve)
	}
}

// descriptorReserve is kept free beyond the caps and the pools: log files,
// DTM and tracing connections, the gateway's own gRPC connection, and
// connections a pool opens while an old one closes.
const descriptorReserve = 256
