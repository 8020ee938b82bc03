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
)

// Summary is what a web configuration file asks of clients.
type Summary struct {
	TLS         bool // HTTPS: tls_server_config has a certificate
	ClientCerts bool // a client certificate is required and verified (client_auth_type RequireAndVerifyClientCert)
	Users       bool // basic_auth_users has users
}

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
	return Summary{
		TLS:         t.TLSCertPath != "" || t.TLSCert != "",
		ClientCerts: t.ClientAuth == "RequireAndVerifyClientCert",
		Users:       len(c.Users) > 0,
	}, nil
}

// Authenticated reports whether a request that reached the handler
// behind exporter-toolkit's (which has already refused those whose
// credentials do not check out) proved who sent it: with basic-auth
// users configured, it carried credentials (checked, then); or it came
// with a client certificate that verified.
func (s Summary) Authenticated(r *http.Request) bool {
	if _, _, ok := r.BasicAuth(); ok && s.Users {
		return true
	}
	return r.TLS != nil && verified(r.TLS)
}

func verified(cs *tls.ConnectionState) bool { return len(cs.VerifiedChains) > 0 }
