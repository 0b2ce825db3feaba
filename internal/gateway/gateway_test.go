package gateway_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/opencoupon/coupon/internal/app"
	"github.com/opencoupon/coupon/internal/coupontest"
	"github.com/opencoupon/coupon/internal/gateway"
	couponv1 "github.com/opencoupon/coupon/proto/coupon/v1"
)

func quietLog() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// startHTTP serves the HTTP listener in front of the gRPC server at target.
func startHTTP(tb testing.TB, target string) string {
	tb.Helper()
	web, err := gateway.Start(context.Background(), gateway.Config{Addr: "127.0.0.1:0"}, gateway.Deps{GRPCTarget: target, Log: quietLog()})
	if err != nil {
		tb.Fatalf("start gateway: %v", err)
	}
	tb.Cleanup(func() {
		if err := web.Close(); err != nil {
			tb.Errorf("close gateway: %v", err)
		}
	})
	return "http://" + web.Addr()
}

// call sends body (JSON, or nothing when empty) and decodes the JSON answer.
func call(tb testing.TB, method, url, token, body string) (int, map[string]any) {
	tb.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		tb.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	out := map[string]any{}
	if err := json.Unmarshal(raw, &out); err != nil {
		tb.Fatalf("%s %s: answer is not JSON: %v: %s", method, url, err, raw)
	}
	return resp.StatusCode, out
}

// reason is the ErrorInfo reason of an error body.
func reason(body map[string]any) string {
	ds, _ := body["details"].([]any)
	for _, d := range ds {
		m, _ := d.(map[string]any)
		if m["@type"] == "type.googleapis.com/google.rpc.ErrorInfo" {
			s, _ := m["reason"].(string)
			return s
		}
	}
	return ""
}

// ok is call for a request that must succeed.
func ok(tb testing.TB, what, method, url, token, body string) map[string]any {
	tb.Helper()
	code, out := call(tb, method, url, token, body)
	if code != http.StatusOK {
		tb.Fatalf("%s: http %d %v", what, code, out)
	}
	return out
}

// activeTemplate creates a campaign and a template over HTTP as alice and
// has bob approve it; it returns the template id.
func activeTemplate(tb testing.TB, base string, stock int) string {
	tb.Helper()
	now := time.Now().UTC()
	camp := ok(tb, "create campaign", "POST", base+"/v1/admin/campaigns", "local-admin-alice", fmt.Sprintf(
		`{"name":"HTTP spring","createdBy":"alice","startTime":%q,"endTime":%q}`,
		now.Add(-time.Minute).Format(time.RFC3339), now.Add(24*time.Hour).Format(time.RFC3339)))
	tpl := ok(tb, "create template", "POST", base+"/v1/admin/campaigns/"+camp["id"].(string)+"/templates", "local-admin-alice", fmt.Sprintf(
		`{"name":"10 off","coupon_type":"FIXED_AMOUNT","discount_amount":1000,"total_stock":%d,"per_user_limit":1,"created_by":"alice","valid_from":%q,"valid_until":%q}`,
		stock, now.Add(-time.Minute).Format(time.RFC3339), now.Add(24*time.Hour).Format(time.RFC3339)))
	id := tpl["id"].(string)
	ok(tb, "approve", "POST", base+"/v1/admin/templates/"+id+":approve", "local-admin-bob", `{"approvedBy":"bob","version":"`+tpl["version"].(string)+`"}`)
	return id
}

func TestClaimOverHTTPIsIdempotent(t *testing.T) {
	srv := coupontest.Start(t)
	base := startHTTP(t, srv.Addr)
	id := activeTemplate(t, base, 5)

	claim := fmt.Sprintf(`{"request_id":"http-r-1","template_id":%s}`, id)
	first := ok(t, "claim", "POST", base+"/v1/users/42/coupons", "local-app", claim)
	again := ok(t, "claim retry", "POST", base+"/v1/users/42/coupons", "local-app", claim)
	if first["code"] == "" || first["code"] != again["code"] || first["id"] != again["id"] {
		t.Fatalf("retried claim returned another coupon: first %v, retry %v", first, again)
	}
	if got, want := first["status"], "AVAILABLE"; got != want {
		t.Errorf("claimed coupon status = %v, want %v", got, want)
	}
	list := ok(t, "list", "GET", base+"/v1/users/42/coupons", "local-app", "")
	if got := len(list["coupons"].([]any)); got != 1 {
		t.Errorf("user 42 holds %d coupons after a claim and its retry, want 1", got)
	}
	got := ok(t, "get", "GET", base+"/v1/users/42/coupons/"+first["code"].(string), "local-app", "")
	if got["id"] != first["id"] {
		t.Errorf("GET coupon = %v, want id %v", got, first["id"])
	}
	stats := ok(t, "stats", "GET", base+"/v1/admin/templates/"+id+"/stats", "local-admin-alice", "")
	if stats["issued"] != "1" || stats["remainingStock"] != "4" {
		t.Errorf("stats after one claim = %v, want issued 1, remaining 4", stats)
	}
}

func TestErrorsCarryTheServiceReason(t *testing.T) {
	srv := coupontest.Start(t)
	base := startHTTP(t, srv.Addr)
	now := time.Now().UTC()
	camp := ok(t, "create campaign", "POST", base+"/v1/admin/campaigns", "local-admin-alice", fmt.Sprintf(
		`{"name":"c","createdBy":"alice","startTime":%q,"endTime":%q}`, now.Format(time.RFC3339), now.Add(time.Hour).Format(time.RFC3339)))
	tpl := ok(t, "create template", "POST", base+"/v1/admin/campaigns/"+camp["id"].(string)+"/templates", "local-admin-alice", fmt.Sprintf(
		`{"name":"t","couponType":"FIXED_AMOUNT","discountAmount":"100","totalStock":"1","createdBy":"alice","validFrom":%q,"validUntil":%q}`,
		now.Format(time.RFC3339), now.Add(time.Hour).Format(time.RFC3339)))
	tid := tpl["id"].(string)

	tests := []struct {
		name, method, path, body string
		wantHTTP                 int
		wantReason               string
	}{
		{"maker-checker", "POST", "/v1/admin/templates/" + tid + ":approve", `{"approvedBy":"alice","version":"` + tpl["version"].(string) + `"}`, http.StatusBadRequest, "APPROVER_IS_CREATOR"},
		{"approval without the reviewed version", "POST", "/v1/admin/templates/" + tid + ":approve", `{"approvedBy":"alice"}`, http.StatusBadRequest, "INVALID_ARGUMENT"},
		{"unknown template", "GET", "/v1/admin/templates/999999", "", http.StatusNotFound, "NOT_FOUND"},
		{"bad rule", "POST", "/v1/admin/campaigns/" + camp["id"].(string) + "/templates",
			`{"name":"t","couponType":"FIXED_AMOUNT","discountAmount":"100","createdBy":"alice","usageRule":"order.amount >=","validFrom":"2026-01-01T00:00:00Z","validUntil":"2027-01-01T00:00:00Z"}`,
			http.StatusBadRequest, "INVALID_RULE"},
		{"claim without request id", "POST", "/v1/users/7/coupons", `{"templateId":"` + tid + `"}`, http.StatusBadRequest, "INVALID_ARGUMENT"},
		{"claim of a pending template", "POST", "/v1/users/7/coupons", `{"requestId":"p-1","templateId":"` + tid + `"}`, http.StatusBadRequest, "TEMPLATE_NOT_ACTIVE"},
		{"body is not JSON", "POST", "/v1/users/7/coupons", `{"requestId":`, http.StatusBadRequest, "INVALID_ARGUMENT"},
		{"misspelt field", "POST", "/v1/users/7/coupons", `{"requestid":"x","templateId":"1"}`, http.StatusBadRequest, "INVALID_ARGUMENT"},
		{"unknown path", "GET", "/v1/nothing-here", "", http.StatusNotFound, "NOT_FOUND"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			token := "local-admin-alice"
			if strings.HasPrefix(tt.path, "/v1/users/") {
				token = "local-app" // user-side calls need the app role
			}
			code, body := call(t, tt.method, base+tt.path, token, tt.body)
			if code != tt.wantHTTP || reason(body) != tt.wantReason {
				t.Errorf("http %d reason %q, want %d %q; body %v", code, reason(body), tt.wantHTTP, tt.wantReason, body)
			}
		})
	}
	// Nothing was written by the refused approval.
	got := ok(t, "get template", "GET", base+"/v1/admin/templates/"+tid, "local-admin-alice", "")
	if got["status"] != "PENDING_APPROVAL" || got["approvedBy"] != "" {
		t.Errorf("after the refused approval the template is %v / %q, want PENDING_APPROVAL and no approver", got["status"], got["approvedBy"])
	}
}

// TestEveryMethodIsInTheOpenAPIDocument checks that the served document
// has an operation for each RPC of both services, so none is left without
// an HTTP mapping.
func TestEveryMethodIsInTheOpenAPIDocument(t *testing.T) {
	base := startHTTP(t, "127.0.0.1:1") // the document needs no backend
	resp, err := http.Get(base + "/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var doc struct {
		Paths map[string]map[string]struct {
			OperationID string `json:"operationId"`
		} `json:"paths"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
		t.Fatalf("decode openapi.json: %v", err)
	}
	ops := map[string]bool{}
	for _, methods := range doc.Paths {
		for _, op := range methods {
			ops[op.OperationID] = true
		}
	}
	for _, sd := range []protoreflect.ServiceDescriptor{
		couponv1.File_coupon_v1_coupon_proto.Services().ByName("CouponService"),
		couponv1.File_coupon_v1_admin_proto.Services().ByName("AdminService"),
	} {
		for i := 0; i < sd.Methods().Len(); i++ {
			id := string(sd.Name()) + "_" + string(sd.Methods().Get(i).Name())
			if !ops[id] {
				t.Errorf("openapi.json has no operation %s", id)
			}
		}
	}
}

// metadataRecorder is a gRPC CouponService that only records the metadata
// of the call it gets: it tests what the gateway forwards.
type metadataRecorder struct {
	couponv1.UnimplementedCouponServiceServer
	got chan metadata.MD
}

func (m *metadataRecorder) GetCampaign(ctx context.Context, _ *couponv1.GetCampaignRequest) (*couponv1.Campaign, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	m.got <- md
	return &couponv1.Campaign{Id: 1}, nil
}

func TestForwardsCredentialAndBarrierHeaders(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rec := &metadataRecorder{got: make(chan metadata.MD, 1)}
	gs := grpc.NewServer()
	couponv1.RegisterCouponServiceServer(gs, rec)
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)
	base := startHTTP(t, lis.Addr().String())

	req, _ := http.NewRequest("GET", base+"/v1/campaigns/1", nil)
	req.Header.Set("Authorization", "Bearer local-app")
	req.Header.Set("Dtm-Gid", "gid-1")
	req.Header.Set("X-Caller-Id", "shop")
	req.Header.Set("Grpc-Metadata-Authorization", "Bearer forged")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	md := <-rec.got
	for _, tt := range []struct {
		key  string
		want []string
	}{
		{"authorization", []string{"Bearer local-app"}},
		{"dtm-gid", []string{"gid-1"}},
		{"x-caller-id", []string{"shop"}},
		{"grpcgateway-authorization", nil},
		{"grpc-metadata-authorization", nil},
	} {
		if got := md.Get(tt.key); !slices.Equal(got, tt.want) {
			t.Errorf("metadata %s = %q, want %q", tt.key, got, tt.want)
		}
	}
}

// clientFrom is an HTTP client whose connections come from ip, a loopback
// address of its own (Linux routes all of 127/8 to lo), so that the
// gateway sees it as a caller of its own.
func clientFrom(ip string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	return &http.Client{Transport: &http.Transport{DialContext: d.DialContext}, Timeout: 30 * time.Second}
}

// TestGatewayLimitsPerCaller: with auth off, the rate limit of calls
// through the HTTP gateway is per HTTP client, not one bucket for the
// gateway's loopback connection; and neither an HTTP header nor a gRPC
// caller's metadata can claim another client's address.
func TestGatewayLimitsPerCaller(t *testing.T) {
	srv := coupontest.Start(t, coupontest.WithoutAuth(), func(c *app.Config) {
		c.RateLimit = app.RateLimit{PerCaller: 0.001, Burst: 2}
		c.HTTP.Addr = "127.0.0.1:0"
	})
	web, err := srv.App.StartHTTP(context.Background(), srv.Addr)
	if err != nil {
		t.Fatalf("start http: %v", err)
	}
	t.Cleanup(func() { _ = web.Close() })
	url := "http://" + web.Addr() + "/v1/templates/424242"
	get := func(cl *http.Client, header ...string) (int, string) {
		t.Helper()
		req, err := http.NewRequest("GET", url, nil)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		resp, err := cl.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		defer resp.Body.Close()
		body := map[string]any{}
		_ = json.NewDecoder(resp.Body).Decode(&body)
		return resp.StatusCode, reason(body)
	}
	a, b := clientFrom("127.0.0.2"), clientFrom("127.0.0.3")
	for i := range 2 {
		if code, r := get(a); code != http.StatusNotFound {
			t.Fatalf("call %d of client A within its burst: %d %s, want 404 (served)", i, code, r)
		}
	}
	if code, r := get(a); code != http.StatusTooManyRequests || r != "RATE_LIMITED" {
		t.Fatalf("third call of client A: %d %s, want 429 RATE_LIMITED", code, r)
	}
	// A header cannot move client A to a fresh bucket.
	if code, r := get(a, "Grpc-Metadata-X-Coupon-Gateway-Client", "10.9.9.9", "X-Forwarded-For", "10.9.9.8"); code != http.StatusTooManyRequests {
		t.Fatalf("client A claiming another address in headers: %d %s, want 429 RATE_LIMITED", code, r)
	}
	// Client B has its own bucket.
	for i := range 2 {
		if code, r := get(b); code != http.StatusNotFound {
			t.Fatalf("call %d of client B after A was limited: %d %s, want 404 (served)", i, code, r)
		}
	}

	// A gRPC caller is limited by its peer address and cannot claim to be
	// a gateway client: without the gateway's key the metadata is ignored.
	grpcGet := func(ctx context.Context) error {
		_, err := couponv1.NewCouponServiceClient(srv.Conn).GetTemplate(ctx, &couponv1.GetTemplateRequest{TemplateId: 424242})
		return err
	}
	ctx := context.Background()
	for range 2 {
		_ = grpcGet(ctx)
	}
	spoof := metadata.AppendToOutgoingContext(ctx, "x-coupon-gateway-client", "10.7.7.7", "x-coupon-gateway-key", "guess")
	if err := grpcGet(spoof); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("gRPC call claiming a gateway client after its burst: %v, want ResourceExhausted", err)
	}
}
