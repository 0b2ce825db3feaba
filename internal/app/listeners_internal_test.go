package app

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opencoupon/coupon/internal/metrics"
	"github.com/opencoupon/coupon/internal/testenv"
)

// TestCapLogRateLimited: a burst of refusals logs one line, not one per
// connection (a flood must not flood the log too).
func TestCapLogRateLimited(t *testing.T) {
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var logs testenv.Buffer
	l := limitConns(raw, "test", 1, metrics.New(), slog.New(slog.NewTextHandler(&logs, nil)))
	defer l.Close()
	go func() {
		var open []net.Conn // held until the listener closes
		for {
			c, err := l.Accept()
			if err != nil {
				for _, c := range open {
					c.Close()
				}
				return
			}
			open = append(open, c)
		}
	}()
	held, err := net.Dial("tcp", raw.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	for i := range 5 {
		c, err := net.Dial("tcp", raw.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("connection %d past the cap: read %v, want it closed", i, err)
		}
		c.Close()
	}
	if n := strings.Count(logs.String(), "at its connection cap"); n != 1 {
		t.Errorf("%d cap lines for 5 refusals, want 1:\n%s", n, logs.String())
	}
}
