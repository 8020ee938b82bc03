package gateway

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
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
