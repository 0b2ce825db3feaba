package dtmtest_test

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dtm-labs/client/dtmgrpc"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/opencoupon/coupon/internal/dtmtest"
)

func TestZZLoad(t *testing.T) {
	var opts []dtmtest.Option
	opts = append(opts, dtmtest.Set("store.max_open_conns", "30"), dtmtest.Set("store.max_idle_conns", "30"))
	if os.Getenv("ZZ_REDIS") != "" {
		opts = append(opts, dtmtest.RedisStore())
	}
	if v := os.Getenv("ZZ_ISO"); v != "" {
		opts = append(opts, dtmtest.Set("store.isolation", v))
	}
	c := dtmtest.Start(t, opts...)
	p := startParticipant(t)
	p.nobarrier = true
	url := func(method string) string { return p.addr + "/dtmtest.Participant/" + method }
	var ok, fail atomic.Int64
	var errs sync.Map
	deadline := time.Now().Add(10 * time.Second)
	var wg sync.WaitGroup
	for w := range workers() {
		wg.Go(func() {
			for i := 0; time.Now().Before(deadline); i++ {
				gid := fmt.Sprintf("ld%d-%d-%d", time.Now().UnixNano()%1e6, w, i)
				err := dtmgrpc.TccGlobalTransaction(c.GRPCAddr, gid, func(tcc *dtmgrpc.TccGrpc) error {
					if err := tcc.CallBranch(wrapperspb.String(gid), url("Try"), url("Confirm"), url("Cancel"), &emptypb.Empty{}); err != nil {
						return err
					}
					return tcc.CallBranch(wrapperspb.String(gid), url("Try"), url("Confirm"), url("Cancel"), &emptypb.Empty{})
				})
				if err != nil {
					fail.Add(1)
					errs.Store(err.Error()[:min(120, len(err.Error()))], true)
				} else {
					ok.Add(1)
				}
			}
		})
	}
	wg.Wait()
	t.Logf("ok %d (%.0f/s) fail %d", ok.Load(), float64(ok.Load())/10, fail.Load())
	errs.Range(func(k, _ any) bool { t.Log("err:", k); return true })
	n := strings.Count(c.Logs(), "Deadlock")
	t.Logf("deadlock mentions in logs: %d", n)
	l := c.Logs()
	if len(l) > 3000 { l = l[len(l)-3000:] }
	t.Log(l)
}

func workers() int {
	if v := os.Getenv("ZZ_W"); v != "" {
		var n int
		fmt.Sscan(v, &n)
		return n
	}
	return 64
}
