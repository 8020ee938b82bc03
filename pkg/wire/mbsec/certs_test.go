package mbsec

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// writePair writes a self-signed certificate and its key as PEM files.
func writePair(t *testing.T, dir, name string) (crt, key string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalPKCS8PrivateKey(k)
	crt, key = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	os.WriteFile(crt, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600)
	return crt, key
}

// TestLoadCertsErrorsNameTheKey: each broken file stops start-up with the
// config key and the file in the message.
func TestLoadCertsErrorsNameTheKey(t *testing.T) {
	dir := t.TempDir()
	crt, key := writePair(t, dir, "server")
	_, otherKey := writePair(t, dir, "other")
	ca, _ := writePair(t, dir, "ca")
	notPEM := filepath.Join(dir, "junk.pem")
	os.WriteFile(notPEM, []byte("hello"), 0o600)
	for _, c := range []struct {
		name, crt, key, ca, want string
	}{
		{"missing cert", filepath.Join(dir, "nope.crt"), key, ca, "server.tls.cert: open " + filepath.Join(dir, "nope.crt")},
		{"missing key", crt, filepath.Join(dir, "nope.key"), ca, "server.tls.key: open"},
		{"key of another cert", crt, otherKey, ca, "server.tls.cert " + crt + " and server.tls.key " + otherKey + ": tls: private key does not match public key"},
		{"missing CA", crt, key, filepath.Join(dir, "nope-ca.crt"), "server.tls.client_ca: open"},
		{"CA not PEM", crt, key, notPEM, "server.tls.client_ca " + notPEM + ": no PEM certificate"},
	} {
		_, err := LoadCerts(c.crt, c.key, c.ca)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.name, err, c.want)
		}
	}
	certs, err := LoadCerts(crt, key, ca)
	if err != nil {
		t.Fatal(err)
	}
	if cfg := certs.TLSConfig(); cfg.MinVersion != 0x0303 {
		t.Fatalf("min version %x, want TLS 1.2", cfg.MinVersion)
	}
}
