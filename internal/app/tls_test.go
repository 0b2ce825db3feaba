package app_test

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
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/opencoupon/coupon/internal/app"
	"github.com/opencoupon/coupon/internal/auth"
	"github.com/opencoupon/coupon/internal/coupontest"
	couponv1 "github.com/opencoupon/coupon/proto/coupon/v1"
)

// pki is a throw-away certificate authority.
type pki struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newCA(t *testing.T, name string) *pki {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &pki{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

var serial int64 = 10

// issue signs a leaf certificate for subject (a server one when ip is set).
func (ca *pki) issue(t *testing.T, subject pkix.Name, ip net.IP) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial++
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: subject,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if ip != nil {
		tmpl.IPAddresses = []net.IP{ip}
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func writePEM(t *testing.T, dir, name string, c tls.Certificate) (certFile, keyFile string) {
	t.Helper()
	certFile, keyFile = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	kb, err := x509.MarshalECPrivateKey(c.PrivateKey.(*ecdsa.PrivateKey))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Certificate[0]}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// TestMTLS runs the stack's calls over mutual TLS with certificates made
// here: admins, the app and the shop authenticate by their certificate's
// subject; a certificate of another CA, or none, gets no further than a
// token would.
func TestMTLS(t *testing.T) {
	dir := t.TempDir()
	ca := newCA(t, "coupon test CA")
	caFile := filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(caFile, ca.pem, 0o600); err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := writePEM(t, dir, "server", ca.issue(t, pkix.Name{CommonName: "coupon"}, net.ParseIP("127.0.0.1")))
	srv := coupontest.Start(t, func(c *app.Config) {
		c.TLS = app.TLSConfig{CertFile: certFile, KeyFile: keyFile, ClientCAFile: caFile}
		c.Auth.Callers = append(c.Auth.Callers,
			auth.Caller{Identity: "alice-cert", Roles: []string{auth.RoleAdmin}, Subject: "CN=alice-cert,O=Example"},
			auth.Caller{Identity: "bob-cert", Roles: []string{auth.RoleAdmin}, Subject: "CN=bob-cert,O=Example"},
			auth.Caller{Identity: "app-cert", Roles: []string{auth.RoleApp}, Subject: "CN=app-cert,O=Example"},
			auth.Caller{Identity: "shop-cert", Roles: []string{auth.RoleOrder}, Subject: "CN=shop-cert,O=Example"},
		)
	})
	roots := x509.NewCertPool()
	roots.AddCert(ca.cert)
	dial := func(certs ...tls.Certificate) *grpc.ClientConn {
		return srv.Dial(t, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: roots, Certificates: certs, MinVersion: tls.VersionTLS12})))
	}
	as := func(cn string) *grpc.ClientConn {
		return dial(ca.issue(t, pkix.Name{CommonName: cn, Organization: []string{"Example"}}, nil))
	}
	alice, bob, appc, shop := as("alice-cert"), as("bob-cert"), as("app-cert"), as("shop-cert")
	ctx := ctxT(t)

	now := time.Now()
	camp, err := couponv1.NewAdminServiceClient(alice).CreateCampaign(ctx, &couponv1.CreateCampaignRequest{
		Name: "mtls", CampaignType: "PROMOTION", CreatedBy: "alice-cert",
		StartTime: timestamppb.New(now.Add(-time.Hour)), EndTime: timestamppb.New(now.Add(24 * time.Hour)),
	})
	if err != nil {
		t.Fatalf("CreateCampaign with alice's certificate: %v", err)
	}
	tpl, err := couponv1.NewAdminServiceClient(alice).CreateTemplate(ctx, &couponv1.CreateTemplateRequest{
		CampaignId: camp.Id, Name: "mtls 5 off", CouponType: couponv1.CouponTemplate_FIXED_AMOUNT, DiscountAmount: 500,
		TotalStock: 5, PerUserLimit: 1, CreatedBy: "alice-cert",
		ValidFrom: timestamppb.New(now.Add(-time.Minute)), ValidUntil: timestamppb.New(now.Add(48 * time.Hour)),
	})
	if err != nil {
		t.Fatalf("CreateTemplate with alice's certificate: %v", err)
	}
	if _, err := couponv1.NewAdminServiceClient(bob).ApproveTemplate(ctx, &couponv1.ApproveTemplateRequest{TemplateId: tpl.Id, Version: tpl.GetVersion(), ApprovedBy: "bob-cert"}); err != nil {
		t.Fatalf("ApproveTemplate with bob's certificate: %v", err)
	}
	c, err := couponv1.NewCouponServiceClient(appc).ClaimCoupon(ctx, &couponv1.ClaimCouponRequest{RequestId: "mtls-1", UserId: 9001, TemplateId: tpl.Id})
	if err != nil {
		t.Fatalf("ClaimCoupon with the app's certificate: %v", err)
	}
	// A TCC Try and Confirm as DTM would send them, with the shop's certificate.
	shopCoupons := couponv1.NewCouponServiceClient(shop)
	br := &couponv1.CouponBranchRequest{UserId: 9001, CouponCode: c.Code, Order: &couponv1.Order{OrderNo: "mtls-order", UserId: 9001, Amount: 1000, Currency: "CNY"}}
	branch := func(op string) context.Context {
		return metadata.AppendToOutgoingContext(ctx, "dtm-gid", "mtls-gid", "dtm-trans_type", "tcc", "dtm-branch_id", "01", "dtm-op", op, "dtm-dtm", "127.0.0.1:1")
	}
	if _, err := shopCoupons.LockCoupon(branch("try"), br); err != nil {
		t.Fatalf("LockCoupon with the shop's certificate: %v", err)
	}
	if _, err := shopCoupons.ConsumeCoupon(branch("confirm"), br); err != nil {
		t.Fatalf("ConsumeCoupon with the shop's certificate: %v", err)
	}
	got, err := shopCoupons.GetCoupon(ctx, &couponv1.GetCouponRequest{UserId: 9001, CouponCode: c.Code})
	if err != nil || got.Status != couponv1.Coupon_USED {
		t.Fatalf("coupon after Try and Confirm over mTLS: %v %v, want USED", got.GetStatus(), err)
	}

	// The roles still hold under mTLS.
	_, err = couponv1.NewCouponServiceClient(appc).LockCoupon(branch("try"), br)
	wantRefused(t, "LockCoupon with the app's certificate", err, codes.PermissionDenied, "PERMISSION_DENIED")
	// A certificate of the CA whose subject is no caller.
	_, err = couponv1.NewAdminServiceClient(as("mallory")).ListCampaigns(ctx, &couponv1.ListCampaignsRequest{})
	wantRefused(t, "unknown subject", err, codes.Unauthenticated, "UNAUTHENTICATED")
	// TLS without a client certificate: a bearer token still works, nothing else does.
	none := dial()
	_, err = couponv1.NewAdminServiceClient(none).ListCampaigns(ctx, &couponv1.ListCampaignsRequest{})
	wantRefused(t, "TLS without certificate or token", err, codes.Unauthenticated, "UNAUTHENTICATED")
	if _, err := couponv1.NewAdminServiceClient(none).ListCampaigns(auth.AsToken(ctx, coupontest.TokenAlice), &couponv1.ListCampaignsRequest{}); err != nil {
		t.Fatalf("alice's token over TLS: %v", err)
	}
	// A certificate from another CA, even pressed on the server, fails the
	// handshake; plaintext fails too.
	forged := newCA(t, "another CA").issue(t, pkix.Name{CommonName: "alice-cert", Organization: []string{"Example"}}, nil)
	pushy := srv.Dial(t, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &forged, nil }})))
	if _, err := couponv1.NewAdminServiceClient(pushy).ListCampaigns(ctx, &couponv1.ListCampaignsRequest{}); status.Code(err) != codes.Unavailable {
		t.Fatalf("certificate of another CA: %v, want the handshake refused (Unavailable)", err)
	}
	if _, err := srv.Admin.ListCampaigns(ctx, &couponv1.ListCampaignsRequest{}); status.Code(err) != codes.Unavailable {
		t.Fatalf("plaintext against the TLS listener: %v, want Unavailable", err)
	}
}
