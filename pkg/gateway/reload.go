package gateway

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
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
	if why := reloadRefused(r); why != "" {
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

// reloadRefused says why a reload request is refused, or "".
func reloadRefused(r *http.Request) string {
	host, _, _ := net.SplitHostPort(r.RemoteAddr)
	if ip, err := netip.ParseAddr(host); err != nil || !ip.Unmap().IsLoopback() {
		return "reload is served to loopback clients only: run mcpgw reload on the gateway's box, or send it SIGHUP"
	}
	if r.Header.Get(ReloadHeader) == "" {
		return "reload needs the " + ReloadHeader + " header (mcpgw reload sends it): a browser cannot be made to send it"
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
