package coordinator

import (
	"strings"
	"testing"
)

func TestRedactText(t *testing.T) {
	for _, tt := range []struct {
		name, in, want string
	}{
		{"json", `{"branch_headers":{"authorization":"Bearer abc","x-trace":"t1"}}`,
			`{"branch_headers":{"authorization":"[REDACTED]","x-trace":"t1"}}`},
		{"json in a json string", `{"options":"{\"branch_headers\":{\"x-api-key\":\"k1\",\"x-trace\":\"t1\"}}"}`,
			`{"options":"{\"branch_headers\":{\"x-api-key\":\"[REDACTED]\",\"x-trace\":\"t1\"}}"}`},
		{"escaped quote inside", `{"cookie":"a\"b","x":"y"}`, `{"cookie":"[REDACTED]","x":"y"}`},
		{"go map", `headers: map[authorization:Bearer abc x-trace:t1]`, `headers: map[authorization:Bearer [REDACTED] x-trace:t1]`},
		{"query", `GET /x?gid=g1&access_token=abc&op=confirm`, `GET /x?gid=g1&access_token=[REDACTED]&op=confirm`},
		{"sql literal", `INSERT INTO trans_global (options) VALUES ('{"branch_headers":{"Authorization":"Bearer abc"}}')`,
			`INSERT INTO trans_global (options) VALUES ('{"branch_headers":{"Authorization":"[REDACTED]"}}')`},
		{"nothing to hide", `{"gid":"g1","status":"succeed"}`, `{"gid":"g1","status":"succeed"}`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := redactText(tt.in); got != tt.want {
				t.Errorf("redactText(%s)\n = %s\nwant %s", tt.in, got, tt.want)
			}
		})
	}
}

func TestRedactJSON(t *testing.T) {
	in := `{"branch_headers":{"authorization":"Bearer abc","X-Session-Id":"s1","x-trace":"t1"},"wait_result":true,"retry_limit":3}`
	got := redactJSON(in)
	for _, secret := range []string{"abc", "s1"} {
		if strings.Contains(got, secret) {
			t.Errorf("redactJSON kept %q: %s", secret, got)
		}
	}
	if !strings.Contains(got, `"x-trace":"t1"`) || !strings.Contains(got, `"retry_limit":3`) {
		t.Errorf("redactJSON = %s; want the other members kept", got)
	}
}
