package console_test

import (
	"crypto/tls"
	"net/http"
	"testing"

	"github.com/opencoupon/coupon/internal/console"
)

func TestProxiesClientAndHTTPS(t *testing.T) {
	p, err := console.ParseProxies([]string{"10.0.0.0/8", "192.0.2.1", "::1"})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, remote, xff, proto string
		tls                      bool
		client                   string
		https                    bool
	}{
		{"untrusted peer, headers ignored", "198.51.100.1:5000", "203.0.113.9", "https", false, "198.51.100.1", false},
		{"trusted proxy", "192.0.2.1:5000", "203.0.113.9", "https", false, "203.0.113.9", true},
		{"chain of trusted proxies", "10.1.1.1:5000", "203.0.113.9, 10.2.2.2", "https", false, "203.0.113.9", true},
		{"client-written prefix not believed", "10.1.1.1:5000", "1.2.3.4, 203.0.113.9", "http", false, "203.0.113.9", false},
		{"garbage hop stops the walk", "10.1.1.1:5000", "203.0.113.9, junk", "", false, "10.1.1.1", false},
		{"only trusted hops", "10.1.1.1:5000", "10.3.3.3", "", false, "10.3.3.3", false},
		{"IPv6 trusted proxy", "[::1]:5000", "2001:db8::5", "https", false, "2001:db8::5", true},
		{"direct TLS", "198.51.100.1:5000", "", "", true, "198.51.100.1", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			r, _ := http.NewRequest("GET", "/", nil)
			r.RemoteAddr = c.remote
			if c.xff != "" {
				r.Header.Set("X-Forwarded-For", c.xff)
			}
			if c.proto != "" {
				r.Header.Set("X-Forwarded-Proto", c.proto)
			}
			if c.tls {
				r.TLS = &tls.ConnectionState{}
			}
			if got := p.ClientIP(r); got != c.client {
				t.Errorf("ClientIP = %s, want %s", got, c.client)
			}
			if got := p.HTTPS(r); got != c.https {
				t.Errorf("HTTPS = %v, want %v", got, c.https)
			}
		})
	}
	for _, bad := range []string{"10.0.0.0/33", "proxy.example", "10.0.0"} {
		if _, err := console.ParseProxies([]string{bad}); err == nil {
			t.Errorf("ParseProxies(%q) accepted", bad)
		}
	}
}
