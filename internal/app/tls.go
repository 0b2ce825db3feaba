package app

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"

	"google.golang.org/grpc/credentials"
)

// TLSConfig turns TLS on for the gRPC listener. With ClientCAFile, client
// certificates signed by that CA authenticate callers by subject (mTLS);
// bearer tokens still work unless RequireClientCert is set.
type TLSConfig struct {
	CertFile, KeyFile string
	ClientCAFile      string
	RequireClientCert bool
}

// Enabled reports whether TLS is configured.
func (t TLSConfig) Enabled() bool { return t.CertFile != "" || t.KeyFile != "" }

// credentials loads the certificates. Rotating them takes a restart.
func (t TLSConfig) credentials() (credentials.TransportCredentials, error) {
	if t.CertFile == "" || t.KeyFile == "" {
		return nil, errors.New("tls: both cert_file and key_file are required")
	}
	cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("tls: load key pair: %w", err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	switch {
	case t.ClientCAFile != "":
		pem, err := os.ReadFile(t.ClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("tls: client CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls: client CA %s holds no PEM certificate", t.ClientCAFile)
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.VerifyClientCertIfGiven
		if t.RequireClientCert {
			cfg.ClientAuth = tls.RequireAndVerifyClientCert
		}
	case t.RequireClientCert:
		return nil, errors.New("tls: require_client_cert needs client_ca_file")
	}
	return credentials.NewTLS(cfg), nil
}
