package gateway

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestServeReload: only the gateway's own box may ask for a reload; a
// refused file answers 422 with the reason.
func TestServeReload(t *testing.T) {
	calls := 0
	s := &Service{OnReload: func() ReloadResult {
		calls++
		return ReloadResult{Config: "/etc/mcpgw/config.toml", Error: "line 3: units: 300 is not a unit id"}
	}}
	for _, tc := range []struct {
		remote string
		code   int
	}{
		{"10.0.0.7:40000", http.StatusForbidden},
		{"[2001:db8::1]:40000", http.StatusForbidden},
		{"127.0.0.1:40000", http.StatusUnprocessableEntity},
		{"[::1]:40000", http.StatusUnprocessableEntity},
		{"[::ffff:127.0.0.1]:40000", http.StatusUnprocessableEntity},
	} {
		req := httptest.NewRequest("POST", ReloadPath, nil)
		req.RemoteAddr = tc.remote
		w := httptest.NewRecorder()
		s.serveReload(w, req)
		if w.Code != tc.code {
			t.Errorf("from %s: %d, want %d", tc.remote, w.Code, tc.code)
		}
		if tc.code == http.StatusUnprocessableEntity && !strings.Contains(w.Body.String(), `"error":"line 3: units`) {
			t.Errorf("from %s: body %s", tc.remote, w.Body)
		}
	}
	if calls != 3 {
		t.Fatalf("%d reloads, want 3 (the loopback requests)", calls)
	}
}
