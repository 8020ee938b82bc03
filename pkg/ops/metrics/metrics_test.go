package metrics

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/mcpgw/mcpgw/pkg/chain/offline"
	"github.com/mcpgw/mcpgw/pkg/request"
	"github.com/mcpgw/mcpgw/pkg/rtu"
	"github.com/mcpgw/mcpgw/pkg/tcp"
	"github.com/prometheus/client_golang/prometheus/testutil"
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

// TestCollect: what a scrape reads from the lines, the offline rule,
// agent mode's polls, the units' states, the listeners, the handlers
// that answer at once and counters added by name, checked with
// client_golang's own parser and linter.
func TestCollect(t *testing.T) {
	lines := []*rtu.Bus{
		rtu.NewBus(rtu.Config{Name: "l1", Open: func() (rtu.Port, error) { return nil, errors.New("never opened") }}),
		rtu.NewBus(rtu.Config{Name: "l2", Open: func() (rtu.Port, error) { return nil, errors.New("never opened") }}),
	}
	var denied atomic.Uint64
	denied.Store(7)
	m := New(Sources{
		Version: "test",
		Lines:   func() []*rtu.Bus { return lines },
		Offline: offline.New(slog.New(slog.DiscardHandler)),
		Polls: func(line string) (ok, failed uint64) {
			if line == "l1" {
				return 5, 2
			}
			return 0, 0
		},
		Listeners: map[string]*tcp.Server{"plain": {}},
		Units: func() []offline.Unit {
			return []offline.Unit{{Line: "l1", Unit: 4, State: offline.Offline}, {Line: "l2", Unit: 9, State: offline.Unseen}}
		},
		Answered: map[string]Counter{"denied": denied.Load},
	}, func() bool { return true })
	m.AddCounters(
		Named{Name: "mcpgw_test_total", Help: "A counter added by name.", Labels: []string{"kind", "a"}, Value: func() uint64 { return 3 }},
		Named{Name: "mcpgw_test_total", Help: "A counter added by name.", Labels: []string{"kind", "b"}, Value: func() uint64 { return 4 }},
	)
	want := `
# HELP mcpgw_line_polls_total Agent mode's polls of the line ([[bus.poll]]), by outcome: ok, or failed (no answer, an exception, the unit offline).
# TYPE mcpgw_line_polls_total counter
mcpgw_line_polls_total{line="l1",outcome="failed"} 2
mcpgw_line_polls_total{line="l1",outcome="ok"} 5
mcpgw_line_polls_total{line="l2",outcome="failed"} 0
mcpgw_line_polls_total{line="l2",outcome="ok"} 0
# HELP mcpgw_line_up 1 while the line's port is open.
# TYPE mcpgw_line_up gauge
mcpgw_line_up{line="l1"} 0
mcpgw_line_up{line="l2"} 0
# HELP mcpgw_requests_answered_at_once_total Requests answered without reaching a line, by the handler that answered.
# TYPE mcpgw_requests_answered_at_once_total counter
mcpgw_requests_answered_at_once_total{by="denied"} 7
# HELP mcpgw_tcp_connections_refused_total Client connections closed at accept or at the TLS handshake, by reason.
# TYPE mcpgw_tcp_connections_refused_total counter
mcpgw_tcp_connections_refused_total{listener="plain",reason="max_conns"} 0
mcpgw_tcp_connections_refused_total{listener="plain",reason="max_conns_per_ip"} 0
mcpgw_tcp_connections_refused_total{listener="plain",reason="not_allowed"} 0
# HELP mcpgw_test_total A counter added by name.
# TYPE mcpgw_test_total counter
mcpgw_test_total{kind="a"} 3
mcpgw_test_total{kind="b"} 4
# HELP mcpgw_unit_state Each configured unit's state, 1 for the one it is in: online (it answers), offline (found absent or dead: answered 0x0B at once, one probe at a time), unseen (not heard yet).
# TYPE mcpgw_unit_state gauge
mcpgw_unit_state{line="l1",state="offline",unit="4"} 1
mcpgw_unit_state{line="l1",state="online",unit="4"} 0
mcpgw_unit_state{line="l1",state="unseen",unit="4"} 0
mcpgw_unit_state{line="l2",state="offline",unit="9"} 0
mcpgw_unit_state{line="l2",state="online",unit="9"} 0
mcpgw_unit_state{line="l2",state="unseen",unit="9"} 1
`
	if err := testutil.GatherAndCompare(m.reg, strings.NewReader(want),
		"mcpgw_line_polls_total", "mcpgw_line_up", "mcpgw_requests_answered_at_once_total",
		"mcpgw_tcp_connections_refused_total", "mcpgw_test_total", "mcpgw_unit_state"); err != nil {
		t.Fatal(err)
	}
	problems, err := testutil.GatherAndLint(m.reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
	for _, name := range []string{"mcpgw_line_frames_total", "mcpgw_line_queue_depth", "mcpgw_unit_offline_answers_total", "mcpgw_tcp_connections_open", "mcpgw_tls_handshake_failures_total"} {
		if n, err := testutil.GatherAndCount(m.reg, name); err != nil || n == 0 {
			t.Errorf("%s: %d series, %v", name, n, err)
		}
	}

	// /readyz names the lines that are down.
	rec := httptest.NewRecorder()
	m.HTTP(false).ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
	if body := rec.Body.String(); rec.Code != 503 || !strings.Contains(body, `"lines_down":["l1","l2"]`) || !strings.Contains(body, `"listening":true`) {
		t.Fatalf("/readyz with both lines down: %d %s", rec.Code, body)
	}
	lines = nil
	rec = httptest.NewRecorder()
	m.HTTP(false).ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
	if rec.Code != 200 || !strings.Contains(rec.Body.String(), `"ready":true`) {
		t.Fatalf("/readyz with no line down: %d %s", rec.Code, rec.Body.String())
	}
}
