// Package webconfig reads what a Prometheus web configuration file
// (github.com/prometheus/exporter-toolkit's format, which serves it) says
// about the listener it locks: whether it speaks TLS, whether it asks
// for client certificates, whether it has basic-auth users. The gateway
// uses it to decide whether a request was authenticated, and mcpgw
// reload to know how to reach the gateway.
package webconfig

import (
	"crypto/tls"
	"fmt"
	"net/http"
	"os"

	"github.com/prometheus/exporter-toolkit/web"
	"go.yaml.in/yaml/v2"
	"golang.org/x/crypto/bcrypt"
)

// Summary is what a web configuration file asks of clients.
type Summary struct {
	TLS         bool // HTTPS: tls_server_config has a certificate
	ClientCerts bool // a client certificate is required and verified (client_auth_type RequireAndVerifyClientCert)

	hashes map[string]string // basic_auth_users: name to bcrypt hash
}

// Users reports whether basic_auth_users has users.
func (s Summary) Users() bool { return len(s.hashes) > 0 }

// Read reads the file at path.
func Read(path string) (Summary, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Summary{}, err
	}
	var c web.Config
	if err := yaml.UnmarshalStrict(b, &c); err != nil {
		return Summary{}, fmt.Errorf("%s: %w", path, err)
	}
	t := c.TLSConfig
	s := Summary{
		TLS:         t.TLSCertPath != "" || t.TLSCert != "",
		ClientCerts: t.ClientAuth == "RequireAndVerifyClientCert",
		hashes:      make(map[string]string, len(c.Users)),
	}
	for name, hash := range c.Users {
		s.hashes[name] = string(hash)
	}
	return s, nil
}

// Authenticated reports whether a request proved who sent it: its
// basic-auth credentials match a user of this reading of the file, or it
// came with a client certificate that verified. exporter-toolkit, in
// front, has checked the credentials against its own reading of the
// file; they are checked again here against this one, so that a file
// changed between the two readings (users added) cannot make credentials
// that nobody checked count.
func (s Summary) Authenticated(r *http.Request) bool {
	if user, pass, ok := r.BasicAuth(); ok {
		if hash, found := s.hashes[user]; found && bcrypt.CompareHashAndPassword([]byte(hash), []byte(pass)) == nil {
			return true
		}
	}
	return r.TLS != nil && verified(r.TLS)
}

func verified(cs *tls.ConnectionState) bool { return len(cs.VerifiedChains) > 0 }
