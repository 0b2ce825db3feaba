package tccbench

import (
	"context"
	"fmt"
	"path"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/dtm-labs/client/dtmgrpc/dtmgimp"
	"google.golang.org/grpc"
)

// callTimes adds up how long the client's calls take, per gRPC method: the
// calls to the coordinator (Prepare, RegisterBranch, Submit) and the Try of
// each branch. Confirms go from the coordinator to the participants and are
// not seen here. Logged at info after each slice, they show which leg of a
// global transaction grows under load.
type callTimes struct {
	mu sync.Mutex
	m  map[string]*callStat
}

type callStat struct {
	n     int
	total time.Duration
}

// calls records every call the DTM client makes from this process: DTM
// keeps one connection per target for the whole process, and its
// interceptors are package state, so the recorder is too.
var (
	calls       = &callTimes{m: map[string]*callStat{}}
	installOnce sync.Once
)

func installCallTimes() {
	installOnce.Do(func() {
		dtmgimp.ClientInterceptors = append(dtmgimp.ClientInterceptors, calls.intercept)
	})
}

func (c *callTimes) intercept(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	began := time.Now()
	err := invoker(ctx, method, req, reply, cc, opts...)
	d := time.Since(began)
	c.mu.Lock()
	s := c.m[method]
	if s == nil {
		s = &callStat{}
		c.m[method] = s
	}
	s.n++
	s.total += d
	c.mu.Unlock()
	return err
}

// take returns the mean time of each method since the last take, e.g.
// "Prepare=2.1ms RegisterBranch=1.8ms LockCoupon=12ms Submit=4.0ms", and
// starts over.
func (c *callTimes) take() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var parts []string
	for method, s := range c.m {
		parts = append(parts, fmt.Sprintf("%s=%s", path.Base(method), ms(s.total/time.Duration(s.n))))
	}
	clear(c.m)
	slices.Sort(parts)
	return strings.Join(parts, " ")
}
