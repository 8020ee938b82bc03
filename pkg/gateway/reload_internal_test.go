package gateway

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mcpgw/mcpgw/pkg/config"
)

// TestServeReload: only the gateway's own box may ask for a reload, and
// only as a program does (the header, a local host, no foreign origin):
// not a browser made to by a web page; a refused file answers 422 with
// the reason.
func TestServeReload(t *testing.T) {
	calls := 0
	s := &Service{OnReload: func() ReloadResult {
		calls++
		return ReloadResult{Config: "/etc/mcpgw/config.toml", Error: "line 3: units: 300 is not a unit id"}
	}}
	for _, tc := range []struct {
		name, remote, host, origin string
		noHeader                   bool
		code                       int
	}{
		{name: "another host", remote: "10.0.0.7:40000", code: http.StatusForbidden},
		{name: "another host, IPv6", remote: "[2001:db8::1]:40000", code: http.StatusForbidden},
		{name: "loopback", remote: "127.0.0.1:40000", code: http.StatusUnprocessableEntity},
		{name: "loopback, IPv6", remote: "[::1]:40000", host: "[::1]:9502", code: http.StatusUnprocessableEntity},
		{name: "loopback, mapped", remote: "[::ffff:127.0.0.1]:40000", host: "localhost:9502", code: http.StatusUnprocessableEntity},
		{name: "without the header", remote: "127.0.0.1:40000", noHeader: true, code: http.StatusForbidden},
		{name: "DNS rebinding", remote: "127.0.0.1:40000", host: "evil.example:9502", code: http.StatusForbidden},
		{name: "a foreign page", remote: "127.0.0.1:40000", origin: "http://evil.example", code: http.StatusForbidden},
		{name: "a foreign page, rebound", remote: "127.0.0.1:40000", host: "evil.example", origin: "http://evil.example", code: http.StatusForbidden},
		{name: "an origin that is not a URL", remote: "127.0.0.1:40000", origin: "%%", code: http.StatusForbidden},
		{name: "the box's own page", remote: "127.0.0.1:40000", origin: "http://127.0.0.1:9502", code: http.StatusUnprocessableEntity},
	} {
		req := httptest.NewRequest("POST", ReloadPath, nil)
		req.RemoteAddr = tc.remote
		req.Host = "127.0.0.1:9502"
		if tc.host != "" {
			req.Host = tc.host
		}
		if tc.origin != "" {
			req.Header.Set("Origin", tc.origin)
		}
		if !tc.noHeader {
			req.Header.Set(ReloadHeader, "1")
		}
		w := httptest.NewRecorder()
		s.serveReload(w, req)
		if w.Code != tc.code {
			t.Errorf("%s: %d, want %d (%s)", tc.name, w.Code, tc.code, strings.TrimSpace(w.Body.String()))
		}
		if tc.code == http.StatusUnprocessableEntity && !strings.Contains(w.Body.String(), `"error":"line 3: units`) {
			t.Errorf("%s: body %s", tc.name, w.Body)
		}
	}
	if calls != 4 {
		t.Fatalf("%d reloads, want 4", calls)
	}
}

// TestServeReloadAuthenticated: behind metrics.web_config with users
// (exporter-toolkit has checked the credentials before the handler sees
// the request), a request that carries them may come from another box;
// one without them may not, nor one from a foreign page.
func TestServeReloadAuthenticated(t *testing.T) {
	wc := filepath.Join(t.TempDir(), "web.yml")
	os.WriteFile(wc, []byte("basic_auth_users:\n  alice: $2b$10$AxqQjeZPDLPE.P7ux4KnfeqAWntWUnh62/LzPwdV/0w35NfAefMXa\n"), 0o600)
	cfg := &config.Config{}
	cfg.Metrics.WebConfig = wc
	calls := 0
	s := &Service{cfg: cfg, OnReload: func() ReloadResult { calls++; return ReloadResult{Config: "c"} }}
	for _, tc := range []struct {
		name, origin string
		auth         bool
		code         int
	}{
		{name: "another box, authenticated", auth: true, code: http.StatusOK},
		{name: "another box, no credentials", code: http.StatusForbidden},
		{name: "another box, authenticated, a foreign page", auth: true, origin: "https://evil.example", code: http.StatusForbidden},
		{name: "another box, authenticated, its own page", auth: true, origin: "https://10.0.0.9:9502", code: http.StatusOK},
	} {
		req := httptest.NewRequest("POST", ReloadPath, nil)
		req.RemoteAddr, req.Host = "10.0.0.7:40000", "10.0.0.9:9502"
		req.Header.Set(ReloadHeader, "1")
		if tc.auth {
			req.SetBasicAuth("alice", "x")
		}
		if tc.origin != "" {
			req.Header.Set("Origin", tc.origin)
		}
		w := httptest.NewRecorder()
		s.serveReload(w, req)
		if w.Code != tc.code {
			t.Errorf("%s: %d, want %d (%s)", tc.name, w.Code, tc.code, strings.TrimSpace(w.Body.String()))
		}
	}
	if calls != 2 {
		t.Fatalf("%d reloads, want 2", calls)
	}
}
