//go:build !windows

package gateway_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/websocket"

	"github.com/mcpgw/mcpgw/pkg/tools/sim"
)

// The status page in a real browser: Debian's chromium, headless, driven
// over its DevTools protocol.

// browser is a headless chromium with a page open.
type browser struct {
	t  *testing.T
	ws *websocket.Conn
	id int
}

// openPage starts chromium with a blank page to drive.
func openPage(t *testing.T) *browser {
	t.Helper()
	need(t, "chromium")
	// Its own profile directory, removed once every chromium process is
	// gone: the renderers outlive the main process by a moment.
	profile, err := os.MkdirTemp("", "mcpgw-chromium")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("chromium", "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-port=0",
		"--remote-allow-origins=*", "--user-data-dir="+profile, "about:blank")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // so that all of it can be stopped
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		cmd.Wait()
		for range 50 { // the group's last processes may still be writing
			if os.RemoveAll(profile) == nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
	// "DevTools listening on ws://127.0.0.1:PORT/devtools/browser/ID"
	re := regexp.MustCompile(`DevTools listening on ws://([^/]+)/`)
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	var host string
	for host == "" {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatal("chromium exited before it listened")
			}
			if m := re.FindStringSubmatch(l); m != nil {
				host = m[1]
			}
		case <-time.After(30 * time.Second):
			t.Fatal("chromium did not start its DevTools listener")
		}
	}
	go func() {
		for range lines { // keep chromium's stderr drained
		}
	}()
	req, _ := http.NewRequest(http.MethodPut, "http://"+host+"/json/new?about:blank", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var target struct {
		WS string `json:"webSocketDebuggerUrl"`
	}
	if b, _ := io.ReadAll(resp.Body); json.Unmarshal(b, &target) != nil || target.WS == "" {
		t.Fatalf("DevTools /json/new: %s", b)
	}
	ws, err := websocket.Dial(target.WS, "", "http://localhost/")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.Close() })
	return &browser{t: t, ws: ws}
}

// eval evaluates a JavaScript expression in the page and returns its
// value as JSON.
func (b *browser) eval(expr string) string {
	b.t.Helper()
	var res struct {
		Result struct {
			Value json.RawMessage `json:"value"`
		} `json:"result"`
	}
	// An error (a navigation the expression began) reads as no value.
	r, _ := b.send("Runtime.evaluate", map[string]any{"expression": expr, "returnByValue": true})
	json.Unmarshal(r, &res)
	return string(res.Result.Value)
}

// call sends a DevTools command and returns its result; an error ends
// the test.
func (b *browser) call(method string, params map[string]any) json.RawMessage {
	b.t.Helper()
	r, err := b.send(method, params)
	if err != nil {
		b.t.Fatalf("DevTools %s: %v", method, err)
	}
	return r
}

// send sends a DevTools command and returns its result or its error.
func (b *browser) send(method string, params map[string]any) (json.RawMessage, error) {
	b.t.Helper()
	b.id++
	msg := map[string]any{"id": b.id, "method": method, "params": params}
	if params == nil {
		msg["params"] = map[string]any{}
	}
	if err := websocket.JSON.Send(b.ws, msg); err != nil {
		b.t.Fatal(err)
	}
	for {
		var reply struct {
			ID     int             `json:"id"`
			Result json.RawMessage `json:"result"`
			Error  json.RawMessage `json:"error"`
		}
		b.ws.SetReadDeadline(time.Now().Add(10 * time.Second))
		if err := websocket.JSON.Receive(b.ws, &reply); err != nil {
			b.t.Fatal(err)
		}
		if reply.ID == b.id { // events of the page come in between
			if reply.Error != nil {
				return nil, fmt.Errorf("%s", reply.Error)
			}
			return reply.Result, nil
		}
	}
}

// waitFor evaluates expr until it gives want, for up to 20 s.
func (b *browser) waitFor(expr, want string) string {
	b.t.Helper()
	var got string
	for end := time.Now().Add(20 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		if got = b.eval(expr); got == want {
			return got
		}
	}
	return got
}

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
	if got := b.eval(`document.querySelector('#lines tr.line td:nth-child(4)').textContent`); got != `"up"` {
		t.Errorf("line l1's state: %s", got)
	}
	if got := b.eval(`[...document.querySelectorAll('#units tr.unit td:first-child')].map(td => td.textContent).join(",")`); got != `"1,2,3,4,5,6,7,8,9"` {
		t.Errorf("units listed: %s, want every configured one", got)
	}
	if got := b.eval(`[...document.querySelectorAll('#units tr.unit td:last-child')].map(td => td.textContent).join(",")`); got != `"unseen,online,unseen,unseen,unseen,unseen,unseen,unseen,unseen"` {
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
