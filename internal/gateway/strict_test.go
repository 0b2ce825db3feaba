package gateway_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/opencoupon/coupon/internal/coupontest"
)

// send makes one request with headers and decodes the JSON answer; the
// answer must be JSON, as every refusal is in the API's error shape.
func send(tb testing.TB, method, url string, header map[string]string, body string) (*http.Response, map[string]any) {
	tb.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		tb.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	out := map[string]any{}
	if err := json.Unmarshal(raw, &out); err != nil {
		tb.Fatalf("%s %s: http %d, answer is not JSON: %v: %.200s", method, url, resp.StatusCode, err, raw)
	}
	return resp, out
}

// errorMetadata is the ErrorInfo metadata of an error body.
func errorMetadata(body map[string]any) map[string]any {
	ds, _ := body["details"].([]any)
	for _, d := range ds {
		m, _ := d.(map[string]any)
		if m["@type"] == "type.googleapis.com/google.rpc.ErrorInfo" {
			md, _ := m["metadata"].(map[string]any)
			return md
		}
	}
	return nil
}

// wantRefusal fails unless the answer is status with reason, in the API's
// error shape (a google.rpc.Status: numeric code, message, ErrorInfo).
func wantRefusal(tb testing.TB, what string, resp *http.Response, body map[string]any, status int, why string) {
	tb.Helper()
	if resp.StatusCode != status || reason(body) != why {
		tb.Errorf("%s: http %d reason %q, want %d %q; body %v", what, resp.StatusCode, reason(body), status, why, body)
	}
	if _, ok := body["code"].(float64); !ok || body["message"] == "" {
		tb.Errorf("%s: body %v is not a google.rpc.Status", what, body)
	}
}

// userCoupons is how many coupons user holds.
func userCoupons(tb testing.TB, base, user string) int {
	tb.Helper()
	return len(ok(tb, "list", "GET", base+"/v1/users/"+user+"/coupons", "local-app", "")["coupons"].([]any))
}

// TestGatewayRefusesTrailingData: a claim whose body is a valid JSON value
// followed by more data is refused with 400 TRAILING_DATA and issues
// nothing; the same claim without the trailing data (white space after it
// is fine) is issued.
func TestGatewayRefusesTrailingData(t *testing.T) {
	srv := coupontest.Start(t)
	base := startHTTP(t, srv.Addr)
	id := activeTemplate(t, base, 5)
	claim := fmt.Sprintf(`{"request_id":"trail-1","template_id":%s}`, id)
	app := map[string]string{"Authorization": "Bearer local-app"}

	for _, trailer := range []string{`{"templateId": 1}`, ` {"templateId": 1}`, `x`, `[]`, `"more"`, "\n1"} {
		resp, body := send(t, "POST", base+"/v1/users/42/coupons", app, claim+trailer)
		wantRefusal(t, fmt.Sprintf("claim + %q", trailer), resp, body, http.StatusBadRequest, "TRAILING_DATA")
	}
	if n := userCoupons(t, base, "42"); n != 0 {
		t.Fatalf("user 42 holds %d coupons after refused claims, want 0", n)
	}
	stats := ok(t, "stats", "GET", base+"/v1/admin/templates/"+id+"/stats", "local-admin-alice", "")
	if stats["issued"] != "0" || stats["remainingStock"] != "5" {
		t.Fatalf("stats after refused claims = %v, want issued 0, remaining 5", stats)
	}

	ok(t, "claim with white space after the body", "POST", base+"/v1/users/42/coupons", "local-app", claim+" \r\n\t")
	if n := userCoupons(t, base, "42"); n != 1 {
		t.Fatalf("user 42 holds %d coupons after one claim, want 1", n)
	}
}

// TestGatewayRefusesUnknownQueryParameter: a query parameter the method
// does not take (a misspelling, a field bound from the path, any parameter
// on a method with a JSON body) is refused with 400 UNKNOWN_PARAMETER
// naming it, and nothing is executed; the method's own parameters work,
// by proto or JSON name.
func TestGatewayRefusesUnknownQueryParameter(t *testing.T) {
	srv := coupontest.Start(t)
	base := startHTTP(t, srv.Addr)
	id := activeTemplate(t, base, 5)
	ok(t, "claim", "POST", base+"/v1/users/42/coupons", "local-app", fmt.Sprintf(`{"request_id":"q-1","template_id":%s}`, id))
	app := map[string]string{"Authorization": "Bearer local-app"}
	admin := map[string]string{"Authorization": "Bearer local-admin-alice"}

	for _, tc := range []struct {
		name, method, path string
		header             map[string]string
		body, param        string
	}{
		{"misspelt filter", "GET", "/v1/users/42/coupons?statuss=USED", app, "", "statuss"},
		{"second one misspelt", "GET", "/v1/users/42/coupons?status=USED&pagesize=1", app, "", "pagesize"},
		{"path field in the query", "GET", "/v1/users/42/coupons?user_id=43", app, "", "user_id"},
		{"unknown nested", "GET", "/v1/users/42/coupons?status.x=1", app, "", "status.x"},
		{"admin list", "GET", "/v1/admin/campaigns?state=ACTIVE", admin, "", "state"},
		{"claim with a query", "POST", "/v1/users/42/coupons?template_id=1", app, fmt.Sprintf(`{"request_id":"q-2","template_id":%s}`, id), "template_id"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := send(t, tc.method, base+tc.path, tc.header, tc.body)
			wantRefusal(t, tc.name, resp, body, http.StatusBadRequest, "UNKNOWN_PARAMETER")
			if got := errorMetadata(body)["parameter"]; got != tc.param {
				t.Errorf("refusal names parameter %v, want %q", got, tc.param)
			}
		})
	}
	if n := userCoupons(t, base, "42"); n != 1 {
		t.Fatalf("user 42 holds %d coupons, want 1: the claim with a query parameter was executed", n)
	}

	if got := ok(t, "filter", "GET", base+"/v1/users/42/coupons?status=USED", "local-app", "")["coupons"].([]any); len(got) != 0 {
		t.Errorf("status=USED lists %d coupons, want 0 (the one coupon is AVAILABLE)", len(got))
	}
	if got := ok(t, "filter", "GET", base+"/v1/users/42/coupons?status=AVAILABLE&pageSize=10&template_id="+id, "local-app", "")["coupons"].([]any); len(got) != 1 {
		t.Errorf("status=AVAILABLE lists %d coupons, want 1", len(got))
	}
}

// TestGatewayStatusCodes: invalid UTF-8 in the path, query, a header or the
// body is 400 INVALID_UTF8; headers over the API's limit are 431; a method
// a known path does not have is 405 with Allow; a body over the limit is
// 413 — each in the API's JSON error shape, and nothing executed.
func TestGatewayStatusCodes(t *testing.T) {
	srv := coupontest.Start(t)
	base := startHTTP(t, srv.Addr)
	id := activeTemplate(t, base, 5)
	app := map[string]string{"Authorization": "Bearer local-app"}
	claim := func(rid string) string { return fmt.Sprintf(`{"request_id":%q,"template_id":%s}`, rid, id) }
	big := strings.Repeat("a", 20<<10)

	for _, tc := range []struct {
		name, method, path string
		header             map[string]string
		body               string
		status             int
		reason             string
	}{
		{"invalid UTF-8 in the path", "GET", "/v1/users/42/coupons/%FF%FE", app, "", http.StatusBadRequest, "INVALID_UTF8"},
		{"invalid UTF-8 in an unknown path", "GET", "/v1/%FF", app, "", http.StatusBadRequest, "INVALID_UTF8"},
		{"invalid UTF-8 in the query", "GET", "/v1/users/42/coupons?status=%FF", app, "", http.StatusBadRequest, "INVALID_UTF8"},
		{"invalid UTF-8 in a header", "GET", "/v1/users/42/coupons", map[string]string{"Authorization": "Bearer local-app", "X-Request-Id": "r\xff"}, "", http.StatusBadRequest, "INVALID_UTF8"},
		{"invalid UTF-8 in the body", "POST", "/v1/users/42/coupons", app, `{"request_id":"u-` + "\xff" + `","template_id":` + id + `}`, http.StatusBadRequest, "INVALID_UTF8"},
		{"20 KB Authorization", "GET", "/v1/users/42/coupons", map[string]string{"Authorization": "Bearer " + big}, "", http.StatusRequestHeaderFieldsTooLarge, "HEADERS_TOO_LARGE"},
		{"20 KB Cookie", "POST", "/v1/users/42/coupons", map[string]string{"Authorization": "Bearer local-app", "Cookie": "c=" + big}, claim("h-1"), http.StatusRequestHeaderFieldsTooLarge, "HEADERS_TOO_LARGE"},
		{"DELETE on the user's coupons", "DELETE", "/v1/users/42/coupons", app, "", http.StatusMethodNotAllowed, "METHOD_NOT_ALLOWED"},
		{"PUT on a campaign", "PUT", "/v1/admin/campaigns/1", map[string]string{"Authorization": "Bearer local-admin-alice"}, `{}`, http.StatusMethodNotAllowed, "METHOD_NOT_ALLOWED"},
		{"GET on a lock", "GET", "/v1/users/42/coupons/ABC:lock", app, "", http.StatusMethodNotAllowed, "METHOD_NOT_ALLOWED"},
		{"body over the limit", "POST", "/v1/users/42/coupons", app, `{"request_id":"b-1","template_id":` + id + `,"x":"` + strings.Repeat("a", 1<<20) + `"}`, http.StatusRequestEntityTooLarge, "BODY_TOO_LARGE"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := send(t, tc.method, base+tc.path, tc.header, tc.body)
			wantRefusal(t, tc.name, resp, body, tc.status, tc.reason)
			if tc.status == http.StatusMethodNotAllowed && resp.Header.Get("Allow") == "" {
				t.Errorf("405 without Allow")
			}
		})
	}
	resp, _ := send(t, "DELETE", base+"/v1/users/42/coupons", app, "")
	if got := resp.Header.Get("Allow"); got != "POST, GET" && got != "GET, POST" {
		t.Errorf("Allow = %q, want GET and POST", got)
	}
	resp, _ = send(t, "PUT", base+"/v1/admin/campaigns/1", nil, "")
	if got := resp.Header.Get("Allow"); got != "PATCH, GET" && got != "GET, PATCH" {
		t.Errorf("Allow = %q, want GET and PATCH", got)
	}
	if n := userCoupons(t, base, "42"); n != 0 {
		t.Fatalf("user 42 holds %d coupons after refused requests, want 0", n)
	}
}
