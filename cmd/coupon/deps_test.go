package main

import (
	"errors"
	"os/exec"
	"strings"
	"testing"
)

// TestServerLinksNoLab fails when the server binary links the lab again:
// the chaos harness, the benchmarks, the sample shop, the reconcile data
// generator or toxiproxy belong in cmd/couponlab, so that changing them
// neither rebuilds nor redeploys the server.
func TestServerLinksNoLab(t *testing.T) {
	const server = "github.com/opencoupon/coupon/cmd/coupon"
	forbidden := []string{
		"github.com/opencoupon/coupon/chaos",
		"github.com/opencoupon/coupon/cmd/couponlab",
		"github.com/opencoupon/coupon/examples/shop",
		"github.com/opencoupon/coupon/internal/bench",
		"github.com/opencoupon/coupon/reconcile/gen",
		"github.com/Shopify/toxiproxy",
	}
	out, err := exec.Command("go", "list", "-deps", server).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("go list -deps %s: %v\n%s", server, err, ee.Stderr)
		}
		t.Fatalf("go list -deps %s: %v", server, err)
	}
	deps := strings.Fields(string(out))
	if len(deps) == 0 {
		t.Fatalf("go list -deps %s listed nothing", server)
	}
	for _, dep := range deps {
		for _, f := range forbidden {
			if dep == f || strings.HasPrefix(dep, f+"/") {
				t.Errorf("%s links %s; lab code belongs in cmd/couponlab", server, dep)
			}
		}
	}
}
