package app_test

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dtm-labs/client/dtmgrpc"
	"go.yaml.in/yaml/v3"
	"google.golang.org/grpc/codes"

	"github.com/opencoupon/coupon/client/branchcred"
	"github.com/opencoupon/coupon/client/coupontcc"
	"github.com/opencoupon/coupon/internal/app"
	"github.com/opencoupon/coupon/internal/coupontest"
	"github.com/opencoupon/coupon/internal/dtmtest"
	"github.com/opencoupon/coupon/internal/natstest"
	"github.com/opencoupon/coupon/internal/relay"
	"github.com/opencoupon/coupon/internal/testenv"
	couponv1 "github.com/opencoupon/coupon/proto/coupon/v1"
)

// samples parses a /metrics page into series (name{labels}) → value.
func samples(page string) map[string]float64 {
	out := map[string]float64{}
	for _, line := range strings.Split(page, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		out[line[:i]] = v
	}
	return out
}

// value is the sum of the series of name whose labels include every
// name="value" pair in labels.
func value(s map[string]float64, name string, labels ...string) (float64, bool) {
	sum, found := 0.0, false
	for series, v := range s {
		n, rest, _ := strings.Cut(series, "{")
		if n != name {
			continue
		}
		ok := true
		for _, l := range labels {
			if !strings.Contains(rest, l) {
				ok = false
			}
		}
		if ok {
			sum, found = sum+v, true
		}
	}
	return sum, found
}

// names are the sample names a /metrics page exports.
func names(s map[string]float64) map[string]bool {
	out := map[string]bool{}
	for series := range s {
		n, _, _ := strings.Cut(series, "{")
		out[n] = true
	}
	return out
}

// TestMetricsMove drives claims, refusals and a TCC transaction and finds
// each family of the issue on /metrics, moved.
func TestMetricsMove(t *testing.T) {
	dtm := dtmtest.Start(t)
	srv := coupontest.Start(t, func(c *app.Config) { c.StockMetricsRefresh = time.Millisecond })
	before := samples(srv.Metrics(t))
	tpl := template(t, srv, 3)
	var codes3 []string
	for u := range int64(3) {
		codes3 = append(codes3, claim(t, srv, tpl.Id, 100+u).Code)
	}
	_, err := srv.Coupons.ClaimCoupon(ctxT(t), &couponv1.ClaimCouponRequest{RequestId: "sold-out", UserId: 200, TemplateId: tpl.Id})
	wantRefused(t, "claim past the stock", err, codes.FailedPrecondition, "SOLD_OUT")
	_, err = srv.Admin.ListCampaigns(coupontest.WithoutToken(ctxT(t)), &couponv1.ListCampaignsRequest{})
	wantRefused(t, "ListCampaigns without a credential", err, codes.Unauthenticated, "UNAUTHENTICATED")
	for range 3 {
		if _, err := srv.Coupons.GetTemplate(ctxT(t), &couponv1.GetTemplateRequest{TemplateId: tpl.Id}); err != nil {
			t.Fatalf("GetTemplate: %v", err)
		}
	}
	gid := fmt.Sprintf("metrics-%d", time.Now().UnixNano())
	err = dtmgrpc.TccGlobalTransaction2(dtm.GRPCAddr, gid, func(tcc *dtmgrpc.TccGrpc) {
		tcc.BranchHeaders, tcc.WaitResult = coupontest.BranchHeaders(t, gid, branchcred.Order{CouponCode: codes3[0], OrderNo: gid}), true
	}, func(tcc *dtmgrpc.TccGrpc) error {
		_, err := coupontcc.Enlist(coupontest.AsShop(ctxT(t)), tcc, srv.Addr, &couponv1.CouponBranchRequest{UserId: 100, CouponCode: codes3[0],
			Order: &couponv1.Order{OrderNo: gid, UserId: 100, Amount: 8000, Currency: "CNY"}})
		return err
	})
	if err != nil {
		t.Fatalf("TCC transaction: %v", err)
	}

	var after map[string]float64
	moved := func(name string, labels ...string) func() bool {
		return func() bool {
			a, ok := value(after, name, labels...)
			b, _ := value(before, name, labels...)
			return ok && a > b
		}
	}
	checks := []struct {
		what string
		ok   func() bool
	}{
		{"grpc_server_handled_total for ClaimCoupon OK", moved("grpc_server_handled_total", `grpc_method="ClaimCoupon"`, `grpc_code="OK"`)},
		{"grpc_server_handled_total for Unauthenticated", moved("grpc_server_handled_total", `grpc_method="ListCampaigns"`, `grpc_code="Unauthenticated"`)},
		{"grpc_server_handling_seconds histogram", moved("grpc_server_handling_seconds_count", `grpc_method="ClaimCoupon"`)},
		{"claims ISSUED", moved("coupon_claims_total", `reason="ISSUED"`)},
		{"claims SOLD_OUT", moved("coupon_claims_total", `reason="SOLD_OUT"`)},
		{"claim batch sizes", moved("coupon_claim_batch_size_count")},
		{"template cache hits or misses", func() bool {
			return moved("coupon_template_cache_hits_total")() || moved("coupon_template_cache_misses_total")()
		}},
		{"MySQL pool stats per shard", func() bool {
			v, ok := value(after, "go_sql_max_open_connections", `db_name="shard_1"`)
			_, open := value(after, "go_sql_open_connections", `db_name="main"`)
			return ok && v > 0 && open
		}},
		{"Redis pool stats", func() bool { v, ok := value(after, "coupon_redis_pool_connections"); return ok && v > 0 }},
		{"remaining stock of the template", func() bool {
			v, ok := value(after, "coupon_template_remaining_stock", fmt.Sprintf(`template_id="%d"`, tpl.Id))
			return ok && v == 0
		}},
		{"readiness", func() bool { v, ok := value(after, "coupon_ready"); return ok && v == 1 }},
		{"build info", func() bool { v, ok := value(after, "coupon_build_info"); return ok && v == 1 }},
		{"TCC change counts exported", func() bool { _, ok := value(after, "coupon_tcc_changes_total", `op="lock"`); return ok }},
		{"confirm without lock exported", func() bool { _, ok := value(after, "coupon_tcc_confirm_without_lock_total"); return ok }},
		{"locked coupons exported", func() bool { _, ok := value(after, "coupon_locked_coupons"); return ok }},
		{"job timestamps exported", func() bool {
			_, ok := value(after, "coupon_job_last_success_timestamp_seconds", `job="expiry_sweep"`)
			return ok
		}},
	}
	deadline := time.Now().Add(20 * time.Second)
	for _, c := range checks {
		for {
			after = samples(srv.Metrics(t))
			if c.ok() {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: not on /metrics after 20s", c.what)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// metricName matches the names a PromQL expression could reference.
var metricName = regexp.MustCompile(`\b(grpc|coupon|go|process)_[a-z0-9_]+\b`)

// grouping matches the parts of PromQL that hold label names, not metrics:
// recording rule names (level:metric:operations, which Prometheus makes,
// not the service), label matchers, by/without/on/ignoring lists, $labels
// references.
var grouping = regexp.MustCompile(`[a-z_]+:[a-z0-9_:]+|\{[^}]*\}|\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)|\$labels\.[a-z_]+|label_values\([^,]*,`)

func referenced(exprs []string) []string {
	set := map[string]bool{}
	for _, e := range exprs {
		e = grouping.ReplaceAllStringFunc(e, func(s string) string {
			if strings.HasPrefix(s, "label_values(") {
				return s // its first argument is a metric
			}
			return " "
		})
		for _, n := range metricName.FindAllString(e, -1) {
			set[n] = true
		}
	}
	out := make([]string, 0, len(set))
	for n := range set {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// dashboardExprs collects every expr and templating query of the dashboard.
func dashboardExprs(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("../../deploy/grafana/coupon.json")
	if err != nil {
		t.Fatal(err)
	}
	var doc any
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatalf("deploy/grafana/coupon.json: %v", err)
	}
	var out []string
	var walk func(any)
	walk = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			for k, c := range x {
				if s, ok := c.(string); ok && (k == "expr" || k == "query") {
					out = append(out, s)
				}
				walk(c)
			}
		case []any:
			for _, c := range x {
				walk(c)
			}
		}
	}
	walk(doc)
	return out
}

func alertExprs(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("../../deploy/prometheus/alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Groups []struct {
			Rules []struct {
				Record string `yaml:"record"`
				Expr   string `yaml:"expr"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatalf("deploy/prometheus/alerts.yml: %v", err)
	}
	var out []string
	for _, g := range doc.Groups {
		for _, r := range g.Rules {
			out = append(out, r.Expr)
		}
	}
	return out
}

// TestDashboardMetricsExported checks that every metric the Grafana
// dashboard and the alert rules query is on a running service's /metrics.
func TestDashboardMetricsExported(t *testing.T) {
	ns := natstest.Start(t)
	srv := coupontest.Start(t, func(c *app.Config) {
		c.Events = relay.Config{URL: ns.URL, Poll: 10 * time.Millisecond}
		c.Webhooks.Enabled = true
	})
	tpl := template(t, srv, 10)
	claim(t, srv, tpl.Id, 1)
	var page map[string]bool
	testenv.Eventually(t, 10*time.Second, "readiness, the event relay and the webhook dispatcher on /metrics", func() bool {
		s := samples(srv.Metrics(t))
		v, ok := value(s, "coupon_ready")
		page = names(s)
		return ok && v == 1 && page["coupon_events_relay_lag_seconds"] && page["coupon_webhook_endpoints_disabled_total"]
	})
	for what, exprs := range map[string][]string{"deploy/grafana/coupon.json": dashboardExprs(t), "deploy/prometheus/alerts.yml": alertExprs(t)} {
		refs := referenced(exprs)
		if len(refs) < 10 {
			t.Fatalf("%s: found only %v; the expression parser lost them", what, refs)
		}
		for _, n := range refs {
			if !page[n] {
				t.Errorf("%s queries %s, which /metrics does not export", what, n)
			}
		}
	}
}

func TestReferencedNames(t *testing.T) {
	got := referenced([]string{
		`sum by (grpc_method) (rate(grpc_server_handled_total{grpc_service=~"coupon.v1.*",grpc_code!="OK"}[5m]))`,
		`histogram_quantile(0.99, sum by (le) (rate(grpc_server_handling_seconds_bucket[5m]))) > 0.05`,
		`time() - max by (job) (coupon_job_last_success_timestamp_seconds)`,
		`label_values(coupon_build_info, job)`,
		`coupon:grpc_server_errors:ratio_rate5m > 0.1`,
	})
	want := []string{"coupon_build_info", "coupon_job_last_success_timestamp_seconds", "grpc_server_handled_total", "grpc_server_handling_seconds_bucket"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("referenced = %v, want %v", got, want)
	}
}
