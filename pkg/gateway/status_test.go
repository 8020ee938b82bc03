//go:build !windows

package gateway_test

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	chromium "github.com/mcpgw/mcpgw/internal/browser"
	"github.com/mcpgw/mcpgw/pkg/tools/sim"
)

// The status page in a real browser: Debian's chromium, headless, driven
// over its DevTools protocol (internal/browser).

// browser is a headless chromium with a page open, failing the test on
// errors.
type browser struct {
	t *testing.T
	b *chromium.Browser
}

// openPage starts chromium with a blank page to drive.
func openPage(t *testing.T) *browser {
	t.Helper()
	need(t, "chromium")
	b, err := chromium.Open()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return &browser{t: t, b: b}
}

// eval evaluates a JavaScript expression in the page and returns its
// value as JSON.
func (b *browser) eval(expr string) string { return b.b.Eval(expr) }

// call sends a DevTools command and returns its result; an error ends
// the test.
func (b *browser) call(method string, params map[string]any) json.RawMessage {
	b.t.Helper()
	r, err := b.b.Call(method, params)
	if err != nil {
		b.t.Fatal(err)
	}
	return r
}

// waitFor evaluates expr until it gives want, for up to 20 s.
func (b *browser) waitFor(expr, want string) string { return b.b.WaitFor(expr, want, 20*time.Second) }

// TestStatusPageInABrowser: the page renders the line, every configured
// unit with its state, and the clients, and a transaction made after it loaded appears in it.
func TestStatusPageInABrowser(t *testing.T) {
	r := startRig(t, sim.Faults{}, metricsOn)
	c := dial(t, r.addr)
	for i := range 3 {
		exchange(t, c, uint16(i+1), 2, []byte{0x03, 0, 0, 0, 1})
	}
	url := "http://" + r.svc.MetricsAddr.String() + "/"
	b := openPage(t)
	b.eval(fmt.Sprintf("location.assign(%q)", url))
	if got := b.waitFor(`location.href + " " + document.readyState`, fmt.Sprintf("%q", url+" complete")); got != fmt.Sprintf("%q", url+" complete") {
		t.Fatalf("the page did not load: %s", got)
	}
	if got := b.waitFor(`(document.querySelector('#lines .line[data-line="l1"] .state') || {}).textContent`, `"up"`); got != `"up"` {
		t.Errorf("line l1's state: %s", got)
	}
	if got := b.eval(`[...document.querySelectorAll('#units tr.unit td:first-child')].map(td => td.textContent).join(",")`); got != `"1,2,3,4,5,6,7,8,9"` {
		t.Errorf("units listed: %s, want every configured one", got)
	}
	if got := b.eval(`[...document.querySelectorAll('#units tr.unit .badge')].map(b => b.textContent).join(",")`); got != `"not yet seen,online,not yet seen,not yet seen,not yet seen,not yet seen,not yet seen,not yet seen,not yet seen"` {
		t.Errorf("units' states: %s", got)
	}
	if got := b.eval(`document.querySelectorAll('#clients tr').length`); got != "2" {
		t.Errorf("client rows (with the header): %s", got)
	}
	// A transaction after the page loaded: its trace shows up at the top.
	exchange(t, c, 9, 3, []byte{0x03, 0, 0, 0, 1})
	lines := transactions(t, r.log.String())
	trace := lines[len(lines)-1]["trace"].(string)
	want := fmt.Sprintf("%q", trace)
	if got := b.waitFor(`(document.querySelector('#tx tr.new td:nth-child(2)') || {}).textContent`, want); got != want {
		t.Fatalf("the live row: %s, want %s (the transaction's trace)", got, want)
	}
	if got := b.eval(`document.querySelector('#tx tr.new td:nth-child(5)').textContent`); !strings.Contains(got, "3") {
		t.Errorf("the live row's unit: %s", got)
	}
}

var screenshot = flag.String("screenshot", "", "write TestStatusHistoryInABrowser's page as a PNG to this file (make screenshot)")

// TestStatusHistoryInABrowser: the pictures of the last hour, in
// Chromium. A burst of bad CRCs on unit 2 colours its current minute; unit
// 3 unplugged turns its badge offline (and to the top) within a second of
// the gateway marking it so, without a reload, and back online when it
// answers again; the line's sparkline has a point for each second of data.
func TestStatusHistoryInABrowser(t *testing.T) {
	r := startRig(t, sim.Faults{}, "offline_after = 2\nprobe_interval = \"300ms\"\n"+metricsOn)
	c := dial(t, r.addr)
	tid := uint16(0)
	ask := func(unit byte) []byte {
		tid++
		return exchange(t, c, tid, unit, []byte{0x03, 0, 0, 0, 2})
	}
	for range 5 {
		ask(1)
		ask(2)
	}
	base := "http://" + r.svc.MetricsAddr.String()
	b := openPage(t)
	b.eval(fmt.Sprintf("location.assign(%q)", base+"/"))
	if got := b.waitFor(`document.readyState + " " + (typeof api === "object" && api !== null)`, `"complete true"`); got != `"complete true"` {
		t.Fatalf("the page did not load its status: %s", got)
	}
	unit := func(u int, what string) string {
		return b.eval(fmt.Sprintf(`(document.querySelector('#units tr.unit[data-unit="%d"] %s') || {}).textContent`, u, what))
	}
	if got := unit(9, ".badge"); got != `"not yet seen"` {
		t.Errorf("unit 9, configured, never asked: %s", got)
	}
	if got := unit(1, ".badge"); got != `"online"` {
		t.Errorf("unit 1: %s", got)
	}

	// A burst of bad CRCs on unit 2, between good answers (so that it is
	// not taken offline): its current minute turns from green.
	for range 3 {
		r.dev.SetUnitFaults(2, &sim.Faults{Corrupt: 1, CRCOnly: true})
		if got := ask(2); got[0] != 0x83 || got[1] != 0x0B {
			t.Fatalf("a read that only got bad CRCs: % X", got)
		}
		r.dev.SetUnitFaults(2, nil)
		ask(2)
	}
	failed := `document.querySelector('#units tr.unit[data-unit="2"] .strip').dataset.failed.split(",").pop()`
	if got := b.waitFor(failed, `"3"`); got != `"3"` {
		t.Fatalf("unit 2's current minute: %s failed, want the 3 CRC failures", got)
	}
	if got := b.eval(`document.querySelector('#units tr.unit[data-unit="2"] .strip').dataset.now`); got == `"#e4e4e4"` || strings.Contains(got, "hsl(120") || got == `""` {
		t.Errorf("unit 2's minute with failures is coloured %s", got)
	}
	var api struct {
		Lines []struct {
			Series struct {
				CRC []int `json:"crc"`
			} `json:"series"`
		} `json:"lines"`
	}
	_, body := get(t, base+"/api/status")
	if err := json.Unmarshal([]byte(body), &api); err != nil || len(api.Lines) != 1 {
		t.Fatalf("/api/status: %v %.300s", err, body)
	}
	crcs := 0
	for _, n := range api.Lines[0].Series.CRC {
		crcs += n
	}
	if crcs != 3 {
		t.Errorf("/api/status: %d CRC failures on the line, want 3", crcs)
	}

	// Unit 3 unplugged: offline, its badge says so within a second of the
	// gateway's marking, and it sorts first.
	r.dev.Mute(3, true)
	for range 2 {
		ask(3)
	}
	marked := time.Now()
	for end := time.Now().Add(5 * time.Second); !r.svc.Offline.Offline(3); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatal("unit 3 was not taken offline")
		}
		marked = time.Now()
	}
	if got := b.waitFor(`document.querySelector('#units tr.unit[data-unit="3"] .badge').textContent.slice(0, 13)`, `"offline since"`); got != `"offline since"` {
		t.Fatalf("unit 3's badge: %s", got)
	}
	if d := time.Since(marked); d > 1500*time.Millisecond {
		t.Errorf("the badge changed %v after the gateway marked the unit offline, want within a second (and the test's own polling)", d)
	}
	if got := b.eval(`document.querySelector('#units tr.unit').dataset.unit`); got != `"3"` {
		t.Errorf("the first unit listed: %s, want the offline one", got)
	}
	if *screenshot != "" {
		shot := b.call("Page.captureScreenshot", map[string]any{"format": "png", "captureBeyondViewport": true})
		var res struct {
			Data []byte `json:"data"`
		}
		if err := json.Unmarshal(shot, &res); err != nil || len(res.Data) == 0 {
			t.Fatalf("screenshot: %v", err)
		}
		if err := os.WriteFile(*screenshot, res.Data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// Back: a client's request probes it (offline units are probed on
	// their clients' requests), and its badge turns online.
	r.dev.Mute(3, false)
	for end := time.Now().Add(10 * time.Second); r.svc.Offline.Offline(3); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatal("unit 3 stayed offline though it answers again")
		}
		ask(3)
	}
	if got := b.waitFor(`document.querySelector('#units tr.unit[data-unit="3"] .badge').textContent`, `"online"`); got != `"online"` {
		t.Fatalf("unit 3 answering again: %s", got)
	}

	// On a phone's width the page does not spill sideways: wide tables
	// scroll within themselves.
	b.call("Emulation.setDeviceMetricsOverride", map[string]any{"width": 390, "height": 844, "deviceScaleFactor": 3, "mobile": true})
	if got := b.waitFor(`document.documentElement.scrollWidth <= 390`, `true`); got != `true` {
		t.Errorf("at 390 px wide the page is %s px wide", b.eval(`document.documentElement.scrollWidth`))
	}
	b.call("Emulation.clearDeviceMetricsOverride", nil)

	// The sparkline: a point a second since the gateway started.
	points := b.eval(`document.querySelector('#lines .line[data-line="l1"] svg.tx path').getAttribute("d").split(/[ML]/).length - 1`)
	seconds := b.eval(`api.lines[0].series.tx.length`)
	if points != seconds || points == "0" {
		t.Fatalf("the sparkline has %s points for %s seconds of data", points, seconds)
	}
	var now struct {
		Uptime float64 `json:"uptime"`
	}
	_, body = get(t, base+"/api/status")
	json.Unmarshal([]byte(body), &now)
	// The page moves its series on each second, idle or not.
	if n, _ := strconv.Atoi(points); n < 2 || float64(n) > now.Uptime+2 || float64(n) < now.Uptime-3 {
		t.Fatalf("the sparkline has %d points, the gateway has run %.1f s", n, now.Uptime)
	}
}
