package webconfig

import (
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"
)

func TestRead(t *testing.T) {
	type want struct{ TLS, ClientCerts, Users bool }
	for _, tc := range []struct {
		name, file string
		want       want
		err        string // in the error, when it fails
	}{
		{name: "empty", file: "", want: want{}},
		{name: "basic auth", file: "basic_auth_users:\n  alice: $2y$10$abcdefghijklmnopqrstuuJ8Tw1pH7lT3c9G8QY8oYyq1vXo2Lb5e\n", want: want{Users: true}},
		{name: "TLS", file: "tls_server_config:\n  cert_file: a.crt\n  key_file: a.key\n", want: want{TLS: true}},
		{name: "TLS inline", file: "tls_server_config:\n  cert: |\n    -----BEGIN CERTIFICATE-----\n  key_file: a.key\n", want: want{TLS: true}},
		{name: "client certificates", file: "tls_server_config:\n  cert_file: a.crt\n  key_file: a.key\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n", want: want{TLS: true, ClientCerts: true}},
		// Asked for but not verified: not proof of who sent a request.
		{name: "client certificates unverified", file: "tls_server_config:\n  cert_file: a.crt\n  key_file: a.key\n  client_auth_type: RequireAnyClientCert\n", want: want{TLS: true}},
		{name: "unknown key", file: "basic_auth_user:\n  alice: x\n", err: "basic_auth_user"},
		{name: "not YAML", file: "tls_server_config: [\n", err: "web.yml"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "web.yml")
			if err := os.WriteFile(path, []byte(tc.file), 0o600); err != nil {
				t.Fatal(err)
			}
			got, err := Read(path)
			switch {
			case tc.err != "":
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("Read: %v, want an error naming %q", err, tc.err)
				}
			case err != nil:
				t.Fatal(err)
			case (want{got.TLS, got.ClientCerts, got.Users()} != tc.want):
				t.Fatalf("Read: %+v, want %+v", got, tc.want)
			}
		})
	}
	if _, err := Read(filepath.Join(t.TempDir(), "missing.yml")); err == nil {
		t.Fatal("Read of a missing file: no error")
	}
}

func TestAuthenticated(t *testing.T) {
	hash, err := bcrypt.GenerateFromPassword([]byte("secret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	read := func(text string) Summary {
		path := filepath.Join(t.TempDir(), "web.yml")
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		s, err := Read(path)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	users := read("basic_auth_users:\n  alice: " + string(hash) + "\n")
	certs := read("tls_server_config:\n  cert_file: a.crt\n  key_file: a.key\n  client_auth_type: RequireAndVerifyClientCert\n")
	withAuth := func(user, pass string) func(*http.Request) *http.Request {
		return func(r *http.Request) *http.Request { r.SetBasicAuth(user, pass); return r }
	}
	withCert := func(verified bool) func(*http.Request) *http.Request {
		return func(r *http.Request) *http.Request {
			r.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{{}}}
			if verified {
				r.TLS.VerifiedChains = [][]*x509.Certificate{r.TLS.PeerCertificates}
			}
			return r
		}
	}
	plain := func(r *http.Request) *http.Request { return r }
	for _, tc := range []struct {
		name string
		s    Summary
		req  func(*http.Request) *http.Request
		want bool
	}{
		{"nothing configured, nothing sent", Summary{}, plain, false},
		// Credentials nobody checks prove nothing.
		{"credentials without users", certs, withAuth("alice", "secret"), false},
		{"a user's credentials", users, withAuth("alice", "secret"), true},
		// Checked here too: a file that gained users after exporter-toolkit
		// read it does not let unchecked credentials through.
		{"a wrong password", users, withAuth("alice", "guess"), false},
		{"an unknown user", users, withAuth("mallory", "secret"), false},
		{"users, no credentials", users, plain, false},
		{"verified client certificate", certs, withCert(true), true},
		{"unverified client certificate", certs, withCert(false), false},
	} {
		r, _ := http.NewRequest("POST", "https://gw.example:9502/-/reload", nil)
		if got := tc.s.Authenticated(tc.req(r)); got != tc.want {
			t.Errorf("%s: Authenticated = %v, want %v", tc.name, got, tc.want)
		}
	}
}
