package gateway_test

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mcpgw/mcpgw/pkg/tools/sim"
	"github.com/mcpgw/mcpgw/pkg/wire/mbsec"
)

// The tests of the Modbus/TCP Security listener, with certificates
// made by the openssl command line and clients on OpenSSL (Python's ssl
// module, openssl s_client), not on Go's crypto/tls.

// pki is a directory of PEM files made with openssl: name.crt, name.key.
type pki struct {
	t   *testing.T
	dir string
	n   int
}

func (p *pki) path(name, ext string) string { return filepath.Join(p.dir, name+"."+ext) }

func (p *pki) openssl(args ...string) {
	p.t.Helper()
	if out, err := exec.Command("openssl", args...).CombinedOutput(); err != nil {
		p.t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// ca makes a self-signed CA.
func (p *pki) ca(name string) {
	p.openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
		"-keyout", p.path(name, "key"), "-out", p.path(name, "crt"), "-subj", "/CN="+name, "-days", "2")
}

// leaf makes a certificate for name signed by ca, valid for days (-1:
// expired yesterday), with the extensions in ext (openssl's extfile
// syntax, one per line).
func (p *pki) leaf(name, ca, days string, ext ...string) {
	p.n++
	csr := p.path(name, "csr")
	p.openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
		"-keyout", p.path(name, "key"), "-out", csr, "-subj", "/O=plant1/CN="+name)
	extFile := p.path(name, "ext")
	if err := os.WriteFile(extFile, []byte(strings.Join(append([]string{"basicConstraints = critical,CA:FALSE"}, ext...), "\n")+"\n"), 0o600); err != nil {
		p.t.Fatal(err)
	}
	p.openssl("x509", "-req", "-in", csr, "-CA", p.path(ca, "crt"), "-CAkey", p.path(ca, "key"),
		"-set_serial", fmt.Sprint(1000+p.n), "-days", days, "-extfile", extFile, "-out", p.path(name, "crt"))
}

// twoRoles makes a client certificate with two role extensions, which
// openssl refuses to write ("Duplicate extension"): crypto/x509 writes
// it, signed by ca's key.
func (p *pki) twoRoles(name, ca string) {
	t := p.t
	caCert := readPEM(t, p.path(ca, "crt"))
	parent, err := x509.ParseCertificate(caCert)
	if err != nil {
		t.Fatal(err)
	}
	k, err := x509.ParsePKCS8PrivateKey(readPEM(t, p.path(ca, "key")))
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(parent.PublicKey.(*ecdsa.PublicKey).Curve, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	role := func(s string) pkix.Extension {
		return pkix.Extension{Id: mbsec.RoleOID, Value: append([]byte{0x0C, byte(len(s))}, s...)}
	}
	tpl := &x509.Certificate{SerialNumber: big.NewInt(99), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		ExtraExtensions: []pkix.Extension{role("operator"), role("engineer")}}
	der, err := x509.CreateCertificate(rand.Reader, tpl, parent, &key.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	os.WriteFile(p.path(name, "crt"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(p.path(name, "key"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600)
}

func readPEM(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(b)
	if block == nil {
		t.Fatalf("%s: no PEM", path)
	}
	return block.Bytes
}

const roleExt = "1.3.6.1.4.1.50316.802.1 = ASN1:UTF8String:"

// makePKI makes the CA, the gateway's certificate and the clients'.
func makePKI(t *testing.T) *pki {
	need(t, "openssl")
	p := &pki{t: t, dir: t.TempDir()}
	p.ca("plant-ca")
	p.ca("other-ca")
	p.leaf("gateway", "plant-ca", "1", "subjectAltName = IP:127.0.0.1")
	p.leaf("operator", "plant-ca", "1", roleExt+"operator")
	p.leaf("engineer", "plant-ca", "1", roleExt+"engineer")
	p.leaf("norole", "plant-ca", "1")
	p.leaf("foreign", "other-ca", "1", roleExt+"engineer")
	p.leaf("expired", "plant-ca", "-1", roleExt+"engineer")
	p.leaf("octet", "plant-ca", "1", "1.3.6.1.4.1.50316.802.1 = ASN1:OCTETSTRING:engineer")
	p.twoRoles("tworoles", "plant-ca")
	return p
}

// startTLSRig runs a TLS-only gateway (server.listen empty) over a
// virtual line to simulated units 1..3, with access rules for two roles.
func startTLSRig(t *testing.T, p *pki) *rig {
	t.Helper()
	server := fmt.Sprintf("listen = \"\"\n[server.tls]\nlisten = \"127.0.0.1:0\"\ncert = %q\nkey = %q\nclient_ca = %q\n",
		p.path("gateway", "crt"), p.path("gateway", "key"), p.path("plant-ca", "crt"))
	r := startRigWith(t, sim.Faults{}, server, `
[[access]]
roles = ["engineer"]
allow = "read-write"
[[access]]
roles = ["operator"]
units = ["1-2"]
allow = "read"
`)
	if r.svc.Server != nil {
		t.Fatal("server.listen is empty, yet there is a plain listener")
	}
	return r
}

// pyTLS runs the OpenSSL-based client as who (a certificate name, or ""
// for none) and returns its lines.
func pyTLS(t *testing.T, p *pki, addr, who string, reqs ...string) []string {
	t.Helper()
	need(t, "/usr/bin/python3")
	host, port, _ := net.SplitHostPort(addr)
	cert, key := "-", "-"
	if who != "" {
		cert, key = p.path(who, "crt"), p.path(who, "key")
	}
	args := append([]string{"../../testdata/interop/mbtls_client.py", host, port, p.path("plant-ca", "crt"), cert, key}, reqs...)
	out, err := exec.Command("/usr/bin/python3", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("mbtls_client.py: %v\n%s", err, out)
	}
	return strings.Split(strings.TrimSpace(string(out)), "\n")
}

// TestTLSRoles: roles come from the client's certificate and the access
// rules decide by them; the role and the subject are in the log.
func TestTLSRoles(t *testing.T) {
	p := makePKI(t)
	r := startTLSRig(t, p)
	got := pyTLS(t, p, r.addr, "operator", "read:1:10:2", "write:1:10:7", "read:3:10:1")
	want := []string{"ok 0304", "exception 1", "exception 1"}
	if len(got) != 3 || !strings.HasPrefix(got[0], want[0]) || got[1] != want[1] || got[2] != want[2] {
		t.Fatalf("operator: %q, want %q", got, want)
	}
	if got := pyTLS(t, p, r.addr, "engineer", "write:3:10:7", "read:3:10:1"); len(got) != 2 || got[0] != "ok 06000a0007" || got[1] != "ok 03020007" {
		t.Fatalf("engineer: %q", got)
	}
	if got := pyTLS(t, p, r.addr, "norole", "read:1:10:1"); len(got) != 1 || got[0] != "exception 1" {
		t.Fatalf("a client without a role: %q (every rule names roles)", got)
	}
	if n := r.dev.Stats().Requests; n != 3 {
		t.Fatalf("the line carried %d requests, 3 were allowed", n)
	}
	var sawOperator bool
	for _, l := range transactions(t, r.log.String()) {
		if l["role"] == "operator" && l["peer"] == "CN=operator,O=plant1" {
			sawOperator = true
		}
		if l["peer"] == nil {
			t.Fatalf("a TLS transaction without its peer: %v", l)
		}
	}
	if !sawOperator {
		t.Fatalf("no transaction logged with role=operator and its subject:\n%s", r.log.String())
	}
}

// TestTLSRefused: a certificate from another CA, an expired one, one with
// two roles or a role that is not a UTF8String, and no certificate at all
// are refused at the handshake, each logged with the reason; TLS 1.1 is
// refused too.
func TestTLSRefused(t *testing.T) {
	p := makePKI(t)
	r := startTLSRig(t, p)
	for _, c := range []struct{ who, reason string }{
		{"foreign", "unknown authority"},
		{"expired", "expired"},
		{"tworoles", "duplicate extension"},
		{"octet", "OCTET STRING, want a UTF8String"},
		{"", "didn't provide a certificate"},
	} {
		before := r.svc.TLS.HandshakesFailed()
		got := pyTLS(t, p, r.addr, c.who, "read:1:10:1")
		if len(got) != 1 || !strings.HasPrefix(got[0], "error") {
			t.Errorf("%q: %q, want the connection refused", c.who, got)
		}
		if r.svc.TLS.HandshakesFailed() != before+1 {
			t.Errorf("%q: the refusal was not counted", c.who)
		}
		time.Sleep(1100 * time.Millisecond) // refusals are logged once a second
		if !strings.Contains(r.log.String(), c.reason) {
			t.Errorf("%q: no %q in the log:\n%s", c.who, c.reason, r.log.String())
		}
	}
	// openssl s_client offering TLS 1.1 at most.
	host, port, _ := net.SplitHostPort(r.addr)
	before := r.svc.TLS.HandshakesFailed()
	cmd := exec.Command("openssl", "s_client", "-connect", net.JoinHostPort(host, port), "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0",
		"-CAfile", p.path("plant-ca", "crt"), "-cert", p.path("engineer", "crt"), "-key", p.path("engineer", "key"))
	cmd.Stdin = strings.NewReader("")
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("TLS 1.1 handshake succeeded:\n%s", out)
	}
	if r.svc.TLS.HandshakesFailed() != before+1 {
		t.Fatalf("TLS 1.1: the refusal was not counted (s_client: %s)", out)
	}
	if n := r.dev.Stats().Requests; n != 0 {
		t.Fatalf("refused clients reached the line %d times", n)
	}
}

// TestTLSReload: the certificate files are read again on ReloadCerts
// (SIGHUP): new connections get the new certificate.
func TestTLSReload(t *testing.T) {
	p := makePKI(t)
	r := startTLSRig(t, p)
	subject := func() string {
		t.Helper()
		cert, err := tls.LoadX509KeyPair(p.path("engineer", "crt"), p.path("engineer", "key"))
		if err != nil {
			t.Fatal(err)
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(pemFile(t, p.path("plant-ca", "crt")))
		c, err := tls.Dial("tcp", r.addr, &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].Subject.CommonName
	}
	if s := subject(); s != "gateway" {
		t.Fatalf("before: %q", s)
	}
	p.leaf("gateway2", "plant-ca", "1", "subjectAltName = IP:127.0.0.1")
	for _, ext := range []string{"crt", "key"} {
		os.Rename(p.path("gateway2", ext), p.path("gateway", ext))
	}
	if err := r.svc.ReloadCerts(); err != nil {
		t.Fatal(err)
	}
	if s := subject(); s != "gateway2" {
		t.Fatalf("after reload: %q", s)
	}
	// A broken file keeps the certificates in use.
	os.WriteFile(p.path("gateway", "key"), []byte("not a key"), 0o600)
	if err := r.svc.ReloadCerts(); err == nil || !strings.Contains(err.Error(), "server.tls") {
		t.Fatalf("reload of a broken key: %v", err)
	}
	if s := subject(); s != "gateway2" {
		t.Fatalf("after a failed reload: %q", s)
	}
}

func pemFile(t *testing.T, path string) []byte {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
