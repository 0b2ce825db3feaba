package config_test

import (
	"bytes"
	"flag"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/spf13/viper"

	"github.com/opencoupon/coupon/internal/config"
)

var update = flag.Bool("update", false, "rewrite docs/configuration.md from the keys")

const referenceFile = "../../docs/configuration.md"

// TestReferenceUpToDate fails when docs/configuration.md is not what the
// keys generate: change a key, then run go generate ./internal/config (or
// this test with -update).
func TestReferenceUpToDate(t *testing.T) {
	want := config.Reference()
	if *update {
		if err := os.WriteFile(referenceFile, want, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(referenceFile)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("docs/configuration.md is stale; run go generate ./internal/config (-file +keys):\n%s",
			cmp.Diff(strings.Split(string(got), "\n"), strings.Split(string(want), "\n")))
	}
}

// TestKeys: every key is named once, documented, and has a default, so
// that its environment variable is read.
func TestKeys(t *testing.T) {
	name := regexp.MustCompile(`^[a-z_]+(\.[a-z_]+)*$`)
	seen := map[string]bool{}
	for _, k := range config.Keys() {
		if seen[k.Name] {
			t.Errorf("%s is described twice", k.Name)
		}
		seen[k.Name] = true
		if !name.MatchString(k.Name) {
			t.Errorf("key %q is not lower-case dotted words", k.Name)
		}
		if strings.TrimSpace(k.Help) == "" || strings.Contains(k.Help, "\n") {
			t.Errorf("%s: want a one-line description, have %q", k.Name, k.Help)
		}
		if k.Default == nil {
			t.Errorf("%s has no default: COUPON_%s would be read only by a getter that asks for it", k.Name, k.Env())
		}
	}
}

// TestEveryFileKeyIsDescribed: the local stack's file sets only keys that
// are described (a key read by nothing would be ignored silently).
func TestEveryFileKeyIsDescribed(t *testing.T) {
	v := viper.New()
	v.SetConfigFile("../../deploy/local/coupon.yaml")
	if err := v.ReadInConfig(); err != nil {
		t.Fatal(err)
	}
	described := map[string]bool{}
	for _, k := range config.Keys() {
		described[k.Name] = true
	}
	for _, k := range v.AllKeys() {
		if !described[k] && !strings.HasPrefix(k, "auth.callers") {
			t.Errorf("deploy/local/coupon.yaml sets %s, which no key describes", k)
		}
	}
}

// TestLoadErrors: malformed values are refused with the key named.
func TestLoadErrors(t *testing.T) {
	tests := []struct{ env, value, want string }{
		{"COUPON_MYSQL_SLOT_MAP", "0-x:1", "mysql.slot_map"},
		{"COUPON_AUTH_CALLERS", "{not json", "auth.callers: not a JSON list"},
		{"COUPON_RATELIMIT_LIMITS", "[1]", "ratelimit.limits: not a JSON list"},
		{"COUPON_DEADLINE_METHODS", `{"CouponService/GetCoupon":"soon"}`, "deadline.methods.CouponService/GetCoupon"},
		{"COUPON_RECONCILE_MEMORY_LIMIT", "200 apples", "reconcile.memory_limit: size"},
		{"COUPON_RECONCILE_MEMORY_LIMIT", "-1MiB", "reconcile.memory_limit: size"},
	}
	for _, tt := range tests {
		t.Run(tt.env, func(t *testing.T) {
			t.Setenv(tt.env, tt.value)
			_, err := config.Load("")
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Load with %s=%s: error %v, want one naming %q", tt.env, tt.value, err, tt.want)
			}
		})
	}
	if _, err := config.Load("testdata/missing.yaml"); err == nil || !strings.Contains(err.Error(), "read config testdata/missing.yaml") {
		t.Errorf("a missing file: error %v", err)
	}
}

// TestMemoryLimitSizes: the reconcile memory limit takes binary units
// (its default, 200MiB, was once read as 0, no limit).
func TestMemoryLimitSizes(t *testing.T) {
	for value, want := range map[string]uint{
		"": 200 << 20, "200MiB": 200 << 20, "1gib": 1 << 30, "512 KB": 512 << 10, "3m": 3 << 20, "4096": 4096, "10B": 10, "0": 0,
	} {
		t.Run(value, func(t *testing.T) {
			if value != "" {
				t.Setenv("COUPON_RECONCILE_MEMORY_LIMIT", value)
			}
			c, err := config.Load("")
			if err != nil || c.Reconcile.MemoryLimit != want {
				t.Errorf("memory_limit %q: %d, %v; want %d", value, c.Reconcile.MemoryLimit, err, want)
			}
		})
	}
}
