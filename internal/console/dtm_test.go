package console_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/opencoupon/coupon/internal/console"
	"github.com/opencoupon/coupon/internal/dtmtest"
	"github.com/opencoupon/coupon/internal/testenv"
)

// TestDTMHTTPStatus asks a real coordinator about a TCC transaction it
// holds prepared, the same one once aborted, and a gid it never saw.
func TestDTMHTTPStatus(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a DTM coordinator")
	}
	coord := dtmtest.Start(t)
	dtm := &console.DTMHTTP{Addr: coord.HTTPAddr}
	ctx := context.Background()
	gid := fmt.Sprintf("console-%d", time.Now().UnixNano())

	post := func(op string) {
		t.Helper()
		resp, err := http.Post("http://"+coord.HTTPAddr+"/api/dtmsvr/"+op, "application/json",
			strings.NewReader(fmt.Sprintf(`{"gid":%q,"trans_type":"tcc"}`, gid)))
		if err != nil {
			t.Fatalf("%s: %v", op, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: http %d", op, resp.StatusCode)
		}
	}
	post("prepare")
	if st, found, err := dtm.Status(ctx, gid); err != nil || !found || st != "prepared" {
		t.Fatalf("status of a prepared transaction = %q, %v, %v; want prepared", st, found, err)
	}
	post("abort")
	testenv.Eventually(t, 30*time.Second, "the aborted transaction reads failed", func() bool {
		st, found, err := dtm.Status(ctx, gid)
		return err == nil && found && st == "failed"
	})
	if st, found, err := dtm.Status(ctx, gid+"-unknown"); err != nil || found {
		t.Errorf("status of an unknown gid = %q, %v, %v; want not found", st, found, err)
	}
	down := &console.DTMHTTP{Addr: "127.0.0.1:1"}
	if _, _, err := down.Status(ctx, gid); err == nil {
		t.Error("a coordinator that does not answer gives no error")
	}
}
