//go:build linux

package bench

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/mcpgw/mcpgw/internal/loadtest"
	"github.com/mcpgw/mcpgw/pkg/wire/mbsec"
)

// benchPKI writes a CA, the gateway's certificate (for 127.0.0.1) and
// key into dir, and returns the [server.tls] table for the gateway and
// the TLS configuration of a client whose certificate carries the role
// "operator". ECDSA P-256, as the openssl recipe in docs/security.md makes.
func benchPKI(dir, listen string) (server string, client *tls.Config, err error) {
	newKey := func() (*ecdsa.PrivateKey, error) { return ecdsa.GenerateKey(elliptic.P256(), rand.Reader) }
	caKey, err := newKey()
	if err != nil {
		return "", nil, err
	}
	now := time.Now()
	caTpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "bench CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTpl, caTpl, &caKey.PublicKey, caKey)
	if err != nil {
		return "", nil, err
	}
	ca, _ := x509.ParseCertificate(caDER)
	leaf := func(serial int64, name string, tpl *x509.Certificate) (tls.Certificate, []byte, []byte, error) {
		k, err := newKey()
		if err != nil {
			return tls.Certificate{}, nil, nil, err
		}
		tpl.SerialNumber, tpl.Subject = big.NewInt(serial), pkix.Name{CommonName: name}
		tpl.NotBefore, tpl.NotAfter = now.Add(-time.Hour), now.Add(24*time.Hour)
		der, err := x509.CreateCertificate(rand.Reader, tpl, ca, &k.PublicKey, caKey)
		if err != nil {
			return tls.Certificate{}, nil, nil, err
		}
		kder, _ := x509.MarshalPKCS8PrivateKey(k)
		certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
		keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
		pair, err := tls.X509KeyPair(certPEM, keyPEM)
		return pair, certPEM, keyPEM, err
	}
	_, srvCert, srvKey, err := leaf(2, "gateway", &x509.Certificate{IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}})
	if err != nil {
		return "", nil, err
	}
	operator, _, _, err := leaf(3, "operator", &x509.Certificate{ExtraExtensions: []pkix.Extension{
		{Id: mbsec.RoleOID, Value: append([]byte{0x0C, 8}, "operator"...)}}})
	if err != nil {
		return "", nil, err
	}
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	files := map[string][]byte{"ca.crt": caPEM, "server.crt": srvCert, "server.key": srvKey}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			return "", nil, err
		}
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	server = fmt.Sprintf("[server.tls]\nlisten = %q\ncert = %q\nkey = %q\nclient_ca = %q\n", listen,
		filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key"), filepath.Join(dir, "ca.crt"))
	return server, &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{operator}}, nil
}

// benchTLS measures Modbus/TCP Security against plain Modbus TCP on the
// same gateway and line: a poll's latency each way, taken in turn, and
// full handshakes per second.
func benchTLS(ctx context.Context, rep *report, addr, tlsAddr string, client *tls.Config, l *benchLine, polls int, window time.Duration) error {
	rep.printf("\n## Modbus/TCP Security (TLS)\n\n")
	plain, secure := loadtest.SideBySideTLS(ctx, addr, tlsAddr, client, loadtest.Config{
		Units: l.units, Qty: 10, Requests: polls, Think: 5 * time.Millisecond, Seed: 31})
	for what, r := range map[string]*loadtest.Result{"plain polls": plain, "TLS polls": secure} {
		if err := sane(what, r); err != nil {
			return err
		}
	}
	rep.printf("Each poll is made in turn through the plain listener and through the TLS one, on the %s, 5 ms between polls, every value checked: TLS 1.3, ECDSA P-256 certificates, a client whose certificate carries a role, one connection each.\n\n", l.name)
	rep.printf("| listener | polls | p50 | p90 | p99 | wrong | client errors |\n|---|---|---|---|---|---|---|\n")
	for _, row := range []struct {
		name string
		r    *loadtest.Result
	}{{"plain Modbus TCP", plain}, {"Modbus/TCP Security", secure}} {
		rep.printf("| %s | %d | %s | %s | %s | %d | %d |\n", row.name, row.r.OK, us(row.r.Percentile(50)), us(row.r.Percentile(90)), us(row.r.Percentile(99)), row.r.Wrong, errCount(row.r))
	}
	rep.printf("\nTLS adds %s at p50.", us(secure.Percentile(50)-plain.Percentile(50)))
	n, errs := loadtest.Handshakes(ctx, tlsAddr, client, window)
	failed := 0
	for _, v := range errs {
		failed += v
	}
	rep.printf(" Full handshakes (no session resumption, the client's certificate verified each time), one client after another for %s: %d, %.0f per second, %d failed", window, n, float64(n)/window.Seconds(), failed)
	for kind, v := range errs {
		rep.printf(" (%d %s)", v, kind)
	}
	rep.printf(".\n")
	return nil
}
