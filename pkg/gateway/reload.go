package gateway

import (
	"encoding/json"
	"net"
	"net/http"
	"net/netip"
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

// serveReload runs OnReload for a POST from the gateway's own box (a
// loopback address): mcpgw reload, or a script next to it. Others get
// 403: anyone who can reach the metrics listener may read it, not make
// the gateway act.
func (s *Service) serveReload(w http.ResponseWriter, r *http.Request) {
	host, _, _ := net.SplitHostPort(r.RemoteAddr)
	if ip, err := netip.ParseAddr(host); err != nil || !ip.Unmap().IsLoopback() {
		http.Error(w, "reload is served to loopback clients only: run mcpgw reload on the gateway's box, or send it SIGHUP", http.StatusForbidden)
		return
	}
	res := s.OnReload()
	w.Header().Set("Content-Type", "application/json")
	if res.Error != "" {
		w.WriteHeader(http.StatusUnprocessableEntity)
	}
	json.NewEncoder(w).Encode(res)
}
