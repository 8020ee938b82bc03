package mbsec

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
)

// Certs are a Modbus/TCP Security listener's certificate, key and client
// CA, read from files when made and again on Reload. Connections already
// open keep what they were made with.
type Certs struct {
	CertFile, KeyFile, CAFile string
	cur                       atomic.Pointer[tls.Config]
}

// LoadCerts reads the three files. Its errors name the config key and
// the file at fault.
func LoadCerts(certFile, keyFile, caFile string) (*Certs, error) {
	c := &Certs{CertFile: certFile, KeyFile: keyFile, CAFile: caFile}
	if err := c.Reload(); err != nil {
		return nil, err
	}
	return c, nil
}

// Reload reads the files again; if any fails, the certificates in use
// stay and the error says why.
func (c *Certs) Reload() error {
	certPEM, err := os.ReadFile(c.CertFile)
	if err != nil {
		return fmt.Errorf("server.tls.cert: %w", err)
	}
	keyPEM, err := os.ReadFile(c.KeyFile)
	if err != nil {
		return fmt.Errorf("server.tls.key: %w", err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return fmt.Errorf("server.tls.cert %s and server.tls.key %s: %w", c.CertFile, c.KeyFile, err)
	}
	caPEM, err := os.ReadFile(c.CAFile)
	if err != nil {
		return fmt.Errorf("server.tls.client_ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return fmt.Errorf("server.tls.client_ca %s: no PEM certificate in it", c.CAFile)
	}
	c.cur.Store(&tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{pair},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pool,
		// A certificate whose role cannot be read is refused at the
		// handshake, with the reason.
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, err := Identify(cs)
			return err
		},
	})
	return nil
}

// TLSConfig returns the configuration for a listener: each handshake
// takes the certificates read last.
func (c *Certs) TLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			if cfg := c.cur.Load(); cfg != nil {
				return cfg, nil
			}
			return nil, errors.New("no certificates loaded")
		},
	}
}
