package metrics

import (
	"context"
	"io"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/mcpgw/mcpgw/pkg/request"
	"github.com/mcpgw/mcpgw/pkg/tcp"
)

// TestHandlerLabels: routed requests are counted by unit and function
// code, others only by outcome; exceptions by who made them.
func TestHandlerLabels(t *testing.T) {
	m := New(Sources{Version: "test", Listeners: map[string]*tcp.Server{}}, func() bool { return true })
	h := m.Middleware(request.HandlerFunc(func(_ context.Context, r *request.Request, dst []byte) []byte {
		switch r.Unit {
		case 1: // a device's exception
			r.Line, r.Attempts = "l1", 1
			return append(dst, 0x83, 0x02)
		case 2: // answered by the gateway, no line
			r.Outcome = request.Denied
			return append(dst, 0x86, 0x01)
		}
		r.Line, r.Attempts = "l1", 1
		return append(dst, r.PDU...)
	}))
	for _, u := range []byte{1, 2, 3, 200, 200} {
		h.ServeModbus(context.Background(), &request.Request{Unit: u, PDU: []byte{0x03, 0, 0, 0, 1}}, nil)
	}
	rec := httptest.NewRecorder()
	m.HTTP(false).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Result().Body)
	for _, want := range []string{
		`mcpgw_transactions_total{fc="3",line="l1",outcome="exception",unit="1"} 1`,
		`mcpgw_transactions_total{fc="",line="",outcome="denied",unit=""} 1`,
		`mcpgw_transactions_total{fc="3",line="l1",outcome="ok",unit="200"} 2`,
		`mcpgw_exceptions_total{code="2",source="device"} 1`,
		`mcpgw_exceptions_total{code="1",source="gateway"} 1`,
		`mcpgw_transaction_duration_seconds_count{line="l1"} 4`,
		`mcpgw_build_info{goversion="go`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("no %s in:\n%s", want, body)
		}
	}
}

// TestProfile: /debug/pprof/ only when asked for.
func TestProfile(t *testing.T) {
	m := New(Sources{Listeners: map[string]*tcp.Server{}}, nil)
	for _, on := range []bool{false, true} {
		rec := httptest.NewRecorder()
		m.HTTP(on).ServeHTTP(rec, httptest.NewRequest("GET", "/debug/pprof/cmdline", nil))
		if got := rec.Code == 200; got != on {
			t.Errorf("pprof %v: status %d", on, rec.Code)
		}
	}
}
