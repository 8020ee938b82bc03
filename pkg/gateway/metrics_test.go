package gateway_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mcpgw/mcpgw/pkg/config"
	"github.com/mcpgw/mcpgw/pkg/gateway"
	"github.com/mcpgw/mcpgw/pkg/request"
	"github.com/mcpgw/mcpgw/pkg/tools/sim"
)

// The tests of the metrics and health checks, through the whole
// gateway; promtool (Debian's prometheus package) lints the output.

const metricsOn = "\n[metrics]\nlisten = \"127.0.0.1:0\"\n"

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// metricValues parses a text exposition into "name{labels}" -> value.
func metricValues(text string) map[string]float64 {
	vals := map[string]float64{}
	re := regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?) (\S+)$`)
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		if m := re.FindStringSubmatch(sc.Text()); m != nil {
			v, _ := strconv.ParseFloat(m[2], 64)
			vals[m[1]] = v
		}
	}
	return vals
}

// TestMetrics: /metrics passes promtool and counts what happened, each
// kind where it belongs; /healthz and /readyz answer.
func TestMetrics(t *testing.T) {
	need(t, "promtool")
	r := startRig(t, sim.Faults{}, metricsOn)
	base := "http://" + r.svc.MetricsAddr.String()
	c := dial(t, r.addr)
	for i := range 5 {
		if got := exchange(t, c, uint16(i+1), 1, []byte{0x03, 0, 10, 0, 2}); got[0] != 0x03 {
			t.Fatalf("read: % X", got)
		}
	}
	if got := exchange(t, c, 10, 2, []byte{0x03, 0x4E, 0x20, 0, 10}); string(got) != "\x83\x02" {
		t.Fatalf("a read past the device's registers: % X", got)
	}
	if got := exchange(t, c, 11, 1, []byte{0x00, 0, 1}); string(got) != "\x80\x01" {
		t.Fatalf("FC 0: % X", got)
	}
	if got := exchange(t, c, 12, 4, []byte{0x03, 0, 0, 0, 1}); string(got) != "\x83\x0b" {
		t.Fatalf("silent unit 4: % X", got)
	}
	code, text := get(t, base+"/metrics")
	if code != 200 {
		t.Fatalf("/metrics: %d", code)
	}
	lint := exec.Command("promtool", "check", "metrics")
	lint.Stdin = strings.NewReader(text)
	if out, err := lint.CombinedOutput(); err != nil {
		t.Fatalf("promtool check metrics: %v\n%s\n%s", err, out, text)
	}
	v := metricValues(text)
	for name, want := range map[string]float64{
		`mcpgw_transactions_total{fc="3",line="l1",outcome="ok",unit="1"}`:        5,
		`mcpgw_transactions_total{fc="3",line="l1",outcome="exception",unit="2"}`: 1,
		`mcpgw_transactions_total{fc="",line="",outcome="rejected",unit=""}`:      1,
		`mcpgw_exceptions_total{code="2",source="device"}`:                        1,
		`mcpgw_exceptions_total{code="1",source="gateway"}`:                       1,
		`mcpgw_exceptions_total{code="11",source="gateway"}`:                      1,
		`mcpgw_requests_answered_at_once_total{by="rejected"}`:                    1,
		`mcpgw_line_up{line="l1"}`:                                                1,
		`mcpgw_line_retries_total{line="l1"}`:                                     0, // unit 4, never heard: one attempt
		`mcpgw_tcp_connections_open{listener="plain"}`:                            1,
		`mcpgw_transaction_duration_seconds_count{line="l1"}`:                     7,
	} {
		if v[name] != want {
			t.Errorf("%s = %v, want %v", name, v[name], want)
		}
	}
	if !strings.Contains(text, `mcpgw_build_info{goversion="go`) {
		t.Error("no build info")
	}
	if code, body := get(t, base+"/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz: %d %q", code, body)
	}
	if code, body := get(t, base+"/readyz"); code != 200 || !strings.Contains(body, `"ready":true`) {
		t.Errorf("/readyz: %d %q", code, body)
	}
}

// TestMetricsMoveWithFaults: the line's counters follow the device's
// corrupted answers.
func TestMetricsMoveWithFaults(t *testing.T) {
	r := startRig(t, sim.Faults{Corrupt: 0.5, Seed: 3}, metricsOn)
	c := client(t, r.addr, 1)
	for range 20 {
		c.ReadHoldingRegisters(0, 4)
	}
	_, text := get(t, "http://"+r.svc.MetricsAddr.String()+"/metrics")
	v := metricValues(text)
	if v[`mcpgw_line_crc_errors_total{line="l1"}`] == 0 || v[`mcpgw_line_retries_total{line="l1"}`] == 0 {
		t.Fatalf("20 reads from a device that corrupts half its answers: %v CRC errors, %v retries",
			v[`mcpgw_line_crc_errors_total{line="l1"}`], v[`mcpgw_line_retries_total{line="l1"}`])
	}
}

// TestReadyzNamesTheLineDown: a line whose port is missing makes /readyz
// answer 503, naming it; /healthz still answers 200.
func TestReadyzNamesTheLineDown(t *testing.T) {
	cfg, err := config.Parse(`
[server]
listen = "127.0.0.1:0"
[metrics]
listen = "127.0.0.1:0"
[[bus]]
name = "unplugged"
port = "/nonexistent/ttyUSB9"
units = ["1"]
`)
	if err != nil {
		t.Fatal(err)
	}
	svc, err := gateway.NewService(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		svc.Shutdown(ctx)
	}()
	base := "http://" + svc.MetricsAddr.String()
	code, body := get(t, base+"/readyz")
	var st struct {
		Ready bool     `json:"ready"`
		Down  []string `json:"lines_down"`
	}
	if err := json.Unmarshal([]byte(body), &st); err != nil || code != 503 || st.Ready || len(st.Down) != 1 || st.Down[0] != "unplugged" {
		t.Fatalf("/readyz: %d %s (%v)", code, body, err)
	}
	if code, _ := get(t, base+"/healthz"); code != 200 {
		t.Fatalf("/healthz: %d", code)
	}
}

// TestOutcomeLabelsBounded: an echo line with noise and broken answers
// (each failure with different bytes heard) adds no outcome label value
// of its own: the values come from the closed set of outcome names, and
// what was heard goes to the log.
func TestOutcomeLabelsBounded(t *testing.T) {
	r := startRig(t, sim.Faults{Echo: true, Noise: 0.5, Corrupt: 0.5, Seed: 3}, "echo = true\noffline_after = 0\n"+metricsOn)
	c := dial(t, r.addr)
	for i := range 40 {
		exchange(t, c, uint16(i), byte(1+i%3), []byte{0x03, 0, byte(i), 0, 2})
	}
	_, text := get(t, "http://"+r.svc.MetricsAddr.String()+"/metrics")
	known := map[string]bool{}
	for _, o := range request.Outcomes() {
		known[o] = true
	}
	seen := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^mcpgw_transactions_total\{.*outcome="([^"]*)"`).FindAllStringSubmatch(text, -1) {
		seen[m[1]] = true
		if !known[m[1]] {
			t.Errorf("outcome label %q is not one of the outcome names", m[1])
		}
	}
	if !seen["timeout"] || !seen["ok"] {
		t.Fatalf("outcomes seen %v: the faults did not show", seen)
	}
	if !strings.Contains(r.log.String(), `"outcome":"timeout","err":"rtu:`) {
		t.Fatal("no failure's detail in the log")
	}
}
