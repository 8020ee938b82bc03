//go:build unix

// Package browser drives Debian's chromium, headless, over its DevTools
// protocol: a page to load, expressions to evaluate in it, commands to
// send. The tests and the bench use it to see the status page as a
// browser does.
package browser

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"syscall"
	"time"

	"golang.org/x/net/websocket"
)

// Browser is a headless chromium with one page open.
type Browser struct {
	cmd     *exec.Cmd
	profile string
	ws      *websocket.Conn
	id      int
}

// Open starts chromium with a blank page to drive.
func Open() (*Browser, error) {
	// Its own profile directory, removed once every chromium process is
	// gone (Close): the renderers outlive the main process by a moment.
	profile, err := os.MkdirTemp("", "mcpgw-chromium")
	if err != nil {
		return nil, err
	}
	cmd := exec.Command("chromium", "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-port=0",
		"--remote-allow-origins=*", "--user-data-dir="+profile, "about:blank")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // so that all of it can be stopped
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		os.RemoveAll(profile)
		return nil, err
	}
	b := &Browser{cmd: cmd, profile: profile}
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
				b.Close()
				return nil, errors.New("chromium exited before it listened")
			}
			if m := re.FindStringSubmatch(l); m != nil {
				host = m[1]
			}
		case <-time.After(30 * time.Second):
			b.Close()
			return nil, errors.New("chromium did not start its DevTools listener")
		}
	}
	go func() {
		for range lines { // keep chromium's stderr drained
		}
	}()
	req, _ := http.NewRequest(http.MethodPut, "http://"+host+"/json/new?about:blank", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		b.Close()
		return nil, err
	}
	defer resp.Body.Close()
	var target struct {
		WS string `json:"webSocketDebuggerUrl"`
	}
	if body, _ := io.ReadAll(resp.Body); json.Unmarshal(body, &target) != nil || target.WS == "" {
		b.Close()
		return nil, fmt.Errorf("DevTools /json/new: %s", body)
	}
	if b.ws, err = websocket.Dial(target.WS, "", "http://localhost/"); err != nil {
		b.Close()
		return nil, err
	}
	return b, nil
}

// Close stops chromium, every process of it, and removes its profile.
func (b *Browser) Close() {
	if b.ws != nil {
		b.ws.Close()
	}
	syscall.Kill(-b.cmd.Process.Pid, syscall.SIGKILL)
	b.cmd.Wait()
	for range 50 { // the group's last processes may still be writing
		if os.RemoveAll(b.profile) == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Eval evaluates a JavaScript expression in the page and returns its
// value as JSON; an error (a navigation the expression began) reads as
// no value.
func (b *Browser) Eval(expr string) string {
	var res struct {
		Result struct {
			Value json.RawMessage `json:"value"`
		} `json:"result"`
	}
	r, _ := b.Call("Runtime.evaluate", map[string]any{"expression": expr, "returnByValue": true})
	json.Unmarshal(r, &res)
	return string(res.Result.Value)
}

// WaitFor evaluates expr until it gives want, for up to within, and
// returns what it last gave.
func (b *Browser) WaitFor(expr, want string, within time.Duration) string {
	var got string
	for end := time.Now().Add(within); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if got = b.Eval(expr); got == want {
			return got
		}
	}
	return got
}

// Call sends a DevTools command and returns its result or its error.
func (b *Browser) Call(method string, params map[string]any) (json.RawMessage, error) {
	b.id++
	if params == nil {
		params = map[string]any{}
	}
	if err := websocket.JSON.Send(b.ws, map[string]any{"id": b.id, "method": method, "params": params}); err != nil {
		return nil, err
	}
	for {
		var reply struct {
			ID     int             `json:"id"`
			Result json.RawMessage `json:"result"`
			Error  json.RawMessage `json:"error"`
		}
		b.ws.SetReadDeadline(time.Now().Add(10 * time.Second))
		if err := websocket.JSON.Receive(b.ws, &reply); err != nil {
			return nil, err
		}
		if reply.ID == b.id { // events of the page come in between
			if reply.Error != nil {
				return nil, fmt.Errorf("DevTools %s: %s", method, reply.Error)
			}
			return reply.Result, nil
		}
	}
}
