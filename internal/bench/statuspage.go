//go:build linux

package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"slices"
	"strings"
	"time"

	"github.com/goburrow/modbus"

	"github.com/mcpgw/mcpgw/internal/browser"
	"github.com/mcpgw/mcpgw/pkg/ops/history"
)

// benchStatusPage measures the status page at its largest: 10 lines and
// every unit id a client can address (1-247) configured on them, each
// asked once (its history ring made), the lines' ports absent (each
// request a gateway exception, at once). How long /api/status takes and
// weighs, how long Chromium takes from navigation to the page drawn, and
// what the history costs the gateway's memory.
func benchStatusPage(ctx context.Context, rep *report, stderr io.Writer) ([]target, error) {
	rep.printf("\n## The status page at its largest\n\n")
	const lines, units = 10, 247
	metricsAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "[metrics]\nlisten = %q\n", metricsAddr)
	for i := range lines {
		first, last := 1+i*25, min(units, (i+1)*25)
		fmt.Fprintf(&b, "[[bus]]\nname = \"line%d\"\nport = \"/dev/ttyMCPGW-bench-absent%d\"\nunits = [\"%d-%d\"]\ndiscover = false\n", i, i, first, last)
	}
	gw, addr, err := startGatewayProcess(b.String(), 100, "error", stderr)
	if err != nil {
		return nil, err
	}
	defer gw.stop()
	rss0 := gw.rss()
	h := modbus.NewTCPClientHandler(addr)
	h.Timeout = 2 * time.Second
	defer h.Close()
	c := modbus.NewClient(h)
	for u := 1; u <= units; u++ {
		h.SlaveId = byte(u)
		c.ReadHoldingRegisters(0, 1) // 0x0A: its line's port is absent
	}
	time.Sleep(200 * time.Millisecond)
	rss1 := gw.rss()

	// /api/status from a Go client.
	var took []time.Duration
	var size int
	var api struct {
		Lines []json.RawMessage `json:"lines"`
		Units []struct {
			Tx int `json:"tx"`
		} `json:"units"`
	}
	for range 20 {
		t0 := time.Now()
		resp, err := http.Get("http://" + metricsAddr + "/api/status")
		if err != nil {
			return nil, err
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		took = append(took, time.Since(t0))
		size = len(body)
		if err := json.Unmarshal(body, &api); err != nil {
			return nil, fmt.Errorf("/api/status: %w", err)
		}
	}
	slices.Sort(took)
	counted := 0
	for _, u := range api.Units {
		counted += u.Tx
	}
	rep.printf("%d lines, units 1-%d configured on them (all a client can address), each asked once; the lines' ports absent, so every answer is the gateway's at once.\n\n", lines, units)
	rep.printf("| /api/status | p50 | max | bytes | lines | units | transactions in it |\n|---|---|---|---|---|---|---|\n")
	rep.printf("| from a Go client, 20 times | %s | %s | %d | %d | %d | %d |\n\n", took[len(took)/2].Round(10*time.Microsecond), took[len(took)-1].Round(10*time.Microsecond), size, len(api.Lines), len(api.Units), counted)

	// The page in Chromium: navigation to the lines and units drawn.
	loadTime := time.Duration(0)
	if _, err := exec.LookPath("chromium"); err != nil {
		rep.printf("Chromium is not installed: the page's load is not measured.\n")
	} else {
		br, err := browser.Open()
		if err != nil {
			return nil, err
		}
		defer br.Close()
		var loads []time.Duration
		for range 5 {
			br.Eval(fmt.Sprintf("location.assign(%q)", "http://"+metricsAddr+"/"))
			got := br.WaitFor(`(performance.getEntriesByName("mcpgw-rendered")[0] || {}).startTime > 0 && document.querySelectorAll("#units tr.unit").length`, fmt.Sprint(units), 20*time.Second)
			if got != fmt.Sprint(units) {
				return nil, fmt.Errorf("status page: %s units drawn, want %d", got, units)
			}
			var ms float64
			json.Unmarshal([]byte(br.Eval(`performance.getEntriesByName("mcpgw-rendered")[0].startTime`)), &ms)
			loads = append(loads, time.Duration(ms*float64(time.Millisecond)))
		}
		slices.Sort(loads)
		loadTime = loads[len(loads)/2]
		rep.printf("Chromium (headless), the page loaded 5 times: from navigation to every line and unit drawn, %s at p50, %s at most.\n\n", loadTime.Round(time.Millisecond), loads[len(loads)-1].Round(time.Millisecond))
	}
	want := float64(lines*history.LineBytes+units*history.UnitBytes) / (1 << 20)
	grew := float64(rss1-rss0) / 1024
	rep.printf("The gateway's memory: %.1f MiB before the units were asked, %.1f MiB after: %.1f MiB more. The rings take at most %.1f MiB (%d lines of %d KB, %d units of %d KB); the memory grows toward that over an hour, as each second's bucket is first written.\n",
		float64(rss0)/1024, float64(rss1)/1024, grew, want, lines, history.LineBytes/1000, units, history.UnitBytes/1000)
	return []target{
		{name: "status page: drawn within 200 ms with every addressable unit configured", got: loadTime.Round(time.Millisecond).String(), ok: loadTime > 0 && loadTime < 200*time.Millisecond},
		{name: "status page: the history's memory within what the docs state", got: fmt.Sprintf("%.1f MiB so far, at most %.1f MiB", grew, want), ok: grew <= want*1.1},
	}, nil
}
