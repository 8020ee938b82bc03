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
	"strconv"
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
	fmt.Fprintf(&b, "[metrics]\nlisten = %q\npprof = true\n", metricsAddr) // pprof: the heap's figures
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
	heap0, err := heapInuse(metricsAddr)
	if err != nil {
		return nil, err
	}
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
	heap1, err := heapInuse(metricsAddr)
	if err != nil {
		return nil, err
	}

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
	// The rings are allocated whole on a line's or unit's first
	// transaction: the heap counts them at once, where the process's RSS
	// grows as their pages are first written, over the hour.
	want := float64(lines*history.LineBytes+units*history.UnitBytes) / (1 << 20)
	grew := float64(heap1-heap0) / (1 << 20)
	rep.printf("The gateway's heap in use: %.1f MiB before the units were asked, %.1f MiB after: %.1f MiB more, for %d lines' and %d units' rings of %.1f MiB (%d lines of %d KB, %d units of %d KB). Its RSS: %.1f MiB, then %.1f MiB: the rings' pages count there as each second's bucket is first written, over the hour.\n",
		float64(heap0)/(1<<20), float64(heap1)/(1<<20), grew, lines, units, want, lines, history.LineBytes/1000, units, history.UnitBytes/1000, float64(rss0)/1024, float64(rss1)/1024)
	return []target{
		{name: "status page: drawn within 200 ms with every addressable unit configured", got: loadTime.Round(time.Millisecond).String(), ok: loadTime > 0 && loadTime < 200*time.Millisecond},
		{name: "status page: the history's memory as the docs state it (5 % under to 10 % over)", got: fmt.Sprintf("heap +%.1f MiB for rings of %.1f MiB", grew, want), ok: grew >= want*0.95 && grew <= want*1.1},
	}, nil
}

// heapInuse is the gateway's heap in use after a collection, from its
// pprof heap profile's MemStats (metrics.pprof on, listening at addr).
func heapInuse(addr string) (uint64, error) {
	resp, err := http.Get("http://" + addr + "/debug/pprof/heap?debug=1&gc=1")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(body)) {
		if v, ok := strings.CutPrefix(line, "# HeapInuse = "); ok {
			return strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		}
	}
	return 0, fmt.Errorf("pprof heap profile at %s: no HeapInuse in it", addr)
}
