package gateway

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"

	"github.com/mcpgw/mcpgw/pkg/ops/webconfig"
)

// ReloadResult is what a reload did: the fields of its log line, and the
// answer `mcpgw reload` prints.
type ReloadResult struct {
	Config      string   `json:"config"`                 // the file read
	Applied     []string `json:"applied,omitempty"`      // what changed or was read again
	NeedRestart []string `json:"need_restart,omitempty"` // changed in the file, applied at the next restart
	Error       string   `json:"error,omitempty"`        // why the file was refused; the running configuration stays
}

// ReloadPath is where the metrics listener takes reload requests (POST),
// when Service.OnReload is set.
const ReloadPath = "/-/reload"

// ReloadHeader must be on a reload request (with any value): a header a
// browser does not send to another site without asking it first (a CORS
// preflight, which the gateway never grants), so that a web page open on
// the gateway's box cannot make it reload.
const ReloadHeader = "X-Mcpgw-Reload"

// serveReload runs OnReload for a POST from the gateway's own box (a
// loopback address): mcpgw reload, or a script next to it. Others get
// 403: anyone who can reach the metrics listener may read it, not make
// the gateway act. So do requests a browser could have been made to
// send: without ReloadHeader, or naming a host other than the box itself
// (DNS rebinding: a foreign name that resolves to 127.0.0.1), or from a
// page of a foreign origin.
func (s *Service) serveReload(w http.ResponseWriter, r *http.Request) {
	authenticated := false
	if s.cfg != nil && s.cfg.Metrics.WebConfig != "" {
		sum, err := webconfig.Read(s.cfg.Metrics.WebConfig)
		if err != nil {
			http.Error(w, "metrics.web_config: "+err.Error(), http.StatusInternalServerError)
			return
		}
		authenticated = sum.Authenticated(r)
	}
	if why := reloadRefused(r, authenticated); why != "" {
		http.Error(w, why, http.StatusForbidden)
		return
	}
	res := s.OnReload()
	w.Header().Set("Content-Type", "application/json")
	if res.Error != "" {
		w.WriteHeader(http.StatusUnprocessableEntity)
	}
	json.NewEncoder(w).Encode(res)
}

// reloadRefused says why a reload request is refused, or "". One that
// proved who sent it (metrics.web_config's basic auth or client
// certificates) may come from anywhere; others only from the box itself.
func reloadRefused(r *http.Request, authenticated bool) string {
	if r.Header.Get(ReloadHeader) == "" {
		return "reload needs the " + ReloadHeader + " header (mcpgw reload sends it): a browser cannot be made to send it"
	}
	if authenticated {
		if o := r.Header.Get("Origin"); o != "" {
			if u, err := url.Parse(o); err != nil || !strings.EqualFold(u.Host, r.Host) {
				return fmt.Sprintf("reload refused from a web page of origin %q", o)
			}
		}
		return ""
	}
	host, _, _ := net.SplitHostPort(r.RemoteAddr)
	if ip, err := netip.ParseAddr(host); err != nil || !ip.Unmap().IsLoopback() {
		return "reload is served to loopback clients only, or to clients that authenticate (metrics.web_config with basic_auth_users or client certificates): run mcpgw reload on the gateway's box, or send it SIGHUP"
	}
	if !localHost(r.Host) {
		return fmt.Sprintf("reload is served for localhost and loopback addresses only, not for host %q", r.Host)
	}
	if o := r.Header.Get("Origin"); o != "" {
		u, err := url.Parse(o)
		if err != nil || !localHost(u.Host) {
			return fmt.Sprintf("reload refused from a web page of origin %q", o)
		}
	}
	return ""
}

// localHost reports whether a Host header (host or host:port) names the
// box itself: localhost, or a loopback address.
func localHost(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}
