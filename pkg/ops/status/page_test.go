//go:build unix

package status

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http/httptest"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/mcpgw/mcpgw/internal/browser"
	"github.com/mcpgw/mcpgw/pkg/chain/offline"
	"github.com/mcpgw/mcpgw/pkg/request"
	"github.com/mcpgw/mcpgw/pkg/rtu"
	"github.com/mcpgw/mcpgw/pkg/tcp"
)

// TestPageFullHour: the page in Chromium after a full hour of ten busy
// lines over units 1-247: every line's sparkline has its 3600 points and
// every unit its row and strip. How long the drawing took is logged (a
// measure, not a target: timing goals belong to make bench).
func TestPageFullHour(t *testing.T) {
	if _, err := exec.LookPath("chromium"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("chromium is not installed: .ci/run must install it")
		}
		t.Skip("chromium is not installed")
	}
	var lines []Line
	for i := range 10 {
		bus := rtu.NewBus(rtu.Config{Name: fmt.Sprintf("line%d", i), Open: func() (rtu.Port, error) { return nil, errors.New("no port") }})
		lines = append(lines, Line{Bus: bus, Port: "/dev/null", Settings: "19200 8E1"})
	}
	var configured []offline.Unit
	for u := 1; u <= 247; u++ {
		configured = append(configured, offline.Unit{Line: fmt.Sprintf("line%d", (u-1)/25), Unit: byte(u), State: offline.Online})
	}
	s := New(Sources{Lines: func() []Line { return lines }, Listeners: map[string]*tcp.Server{}, Units: func() []offline.Unit { return configured }})
	now := time.Now()
	s.start = now.Add(-time.Hour)
	for sec := range 3600 {
		at := now.Add(time.Duration(sec-3599) * time.Second)
		for l := range 10 {
			u := configured[(l*25+sec)%247]
			o := request.OK
			if sec%60 == l {
				o = request.Timeout
			}
			s.record(&request.Request{Unit: u.Unit, Line: u.Line, PDU: []byte{3, 0, 0, 0, 1}}, request.Done{Outcome: o, Start: at, Duration: 3 * time.Millisecond})
		}
	}
	srv := httptest.NewServer(s.HTTP())
	defer srv.Close()
	b, err := browser.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	b.Eval(fmt.Sprintf("location.assign(%q)", srv.URL+"/"))
	if got := b.WaitFor(`(performance.getEntriesByName("mcpgw-rendered")[0] || {}).startTime > 0 && document.querySelectorAll("#units tr.unit").length`, "247", 30*time.Second); got != "247" {
		t.Fatalf("units drawn: %s", got)
	}
	points := b.Eval(`[...document.querySelectorAll("#lines svg.tx path")].map(p => p.getAttribute("d").split(/[ML]/).length - 1)`)
	var n []int
	if err := json.Unmarshal([]byte(points), &n); err != nil || len(n) != 10 {
		t.Fatalf("sparklines: %s", points)
	}
	for i, p := range n {
		if p < 3600 || p > 3602 { // the page may have moved on a second or two
			t.Errorf("line %d's sparkline has %d points, want the hour's 3600", i, p)
		}
	}
	if got := b.Eval(`[...document.querySelectorAll("#units .strip")].map(s => s.dataset.tx.split(",").length).reduce((a, b) => a + b, 0)`); got != fmt.Sprint(247*60) {
		t.Errorf("minute cells: %s, want %d", got, 247*60)
	}
	t.Logf("drawn %s ms after navigation", b.Eval(`Math.round(performance.getEntriesByName("mcpgw-rendered")[0].startTime)`))
}
