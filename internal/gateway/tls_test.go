package gateway_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/opencoupon/coupon/internal/coupontest"
	"github.com/opencoupon/coupon/internal/gateway"
)

// selfSigned writes a certificate for 127.0.0.1 and its key to dir.
func selfSigned(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "coupon-test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// TestHTTPServesTLS: given a certificate and key, the HTTP listener serves
// the API and the console over TLS only; given half a pair it does not
// start.
func TestHTTPServesTLS(t *testing.T) {
	srv := coupontest.Start(t)
	certFile, keyFile, pool := selfSigned(t, t.TempDir())
	web, err := gateway.Start(context.Background(), gateway.Config{Addr: "127.0.0.1:0", TLS: gateway.TLSConfig{CertFile: certFile, KeyFile: keyFile}},
		gateway.Deps{GRPCTarget: srv.Addr, Log: quietLog()})
	if err != nil {
		t.Fatalf("start gateway with TLS: %v", err)
	}
	t.Cleanup(func() { _ = web.Close() })

	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	req, _ := http.NewRequest("GET", "https://"+web.Addr()+"/v1/users/42/coupons", nil)
	req.Header.Set("Authorization", "Bearer local-app")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("GET over TLS: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.TLS == nil {
		t.Fatalf("GET over TLS: http %d, tls %v; want 200 over TLS", resp.StatusCode, resp.TLS != nil)
	}
	resp, err = client.Get("https://" + web.Addr() + "/console/signin")
	if err != nil {
		t.Fatalf("console over TLS: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("console sign-in page over TLS: http %d, want 200", resp.StatusCode)
	}

	resp, err = http.Get("http://" + web.Addr() + "/v1/users/42/coupons")
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Errorf("plain HTTP on the TLS listener answered 200")
		}
	}

	if _, err := gateway.Start(context.Background(), gateway.Config{Addr: "127.0.0.1:0", TLS: gateway.TLSConfig{CertFile: certFile}},
		gateway.Deps{GRPCTarget: srv.Addr, Log: quietLog()}); err == nil {
		t.Errorf("gateway started with a certificate and no key")
	}
}
