//go:build !windows

package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/goburrow/modbus"
	"github.com/mcpgw/mcpgw/pkg/gateway"
	"github.com/mcpgw/mcpgw/pkg/tools/sim"
	"github.com/mcpgw/mcpgw/pkg/wire/serialport"
)

// startGateway runs the binary with cfg until the test ends, and waits
// until its log says text.
func startGateway(t *testing.T, wrap []string, cfg, text string) (*exec.Cmd, processLog) {
	t.Helper()
	stderr := logOf(t)
	args := append(append([]string{}, wrap...), mcpgwBinary(t), "run", "-config", cfg)
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stderr = stderr.f
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for end := time.Now().Add(20 * time.Second); !strings.Contains(stderr.String(), text); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("the gateway did not start:\n%s", stderr.String())
		}
	}
	return cmd, stderr
}

// simulated runs units 1-2 on a virtual line until the test ends and
// returns the path the gateway opens.
func simulated(t *testing.T) string {
	t.Helper()
	pty, err := serialport.NewPty()
	if err != nil {
		t.Fatal(err)
	}
	dev := &sim.Line{Port: pty.Device, Units: sim.NewUnits([]byte{1, 2}, 100)}
	stop := dev.Start()
	t.Cleanup(func() { stop(); pty.Close() })
	return pty.Path
}

// peakRSS is a process's peak resident memory, in bytes.
func peakRSS(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`VmHWM:\s+(\d+) kB`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("no VmHWM in /proc/%d/status", pid)
	}
	kb, _ := strconv.Atoi(string(m[1]))
	return kb << 10
}

// TestEventStreamsFromOneAddress: 4000 live streams of the status page
// opened at once from one address: all but metrics.max_streams_per_ip
// are refused and their connections closed; the gateway's memory stays
// under 64 MB at its peak; another address still gets a stream, and
// Modbus clients are served.
func TestEventStreamsFromOneAddress(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binary")
	}
	metricsAddr, addr := freeAddr(t), freeAddr(t)
	cfg := writeConfig(t, fmt.Sprintf("[server]\nlisten = %q\n[metrics]\nlisten = %q\n[[bus]]\nname = \"l1\"\nport = %q\nparity = \"N\"\nunits = [1, 2]\n",
		addr, metricsAddr, simulated(t)))
	cmd, log := startGateway(t, nil, cfg, "metrics and health checks listening")
	var ok, refused, failed atomic.Int64
	var mu sync.Mutex
	var open []io.Closer
	work := make(chan struct{})
	var wg sync.WaitGroup
	for range 200 {
		wg.Go(func() {
			tr := &http.Transport{DisableKeepAlives: true}
			c := &http.Client{Transport: tr, Timeout: 20 * time.Second}
			for range work {
				resp, err := c.Get("http://" + metricsAddr + "/events")
				switch {
				case err != nil:
					failed.Add(1)
				case resp.StatusCode == http.StatusOK:
					ok.Add(1)
					mu.Lock()
					open = append(open, resp.Body) // held open
					mu.Unlock()
				case resp.StatusCode == http.StatusTooManyRequests:
					refused.Add(1)
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				default:
					failed.Add(1)
					resp.Body.Close()
				}
			}
		})
	}
	for range 4000 {
		work <- struct{}{}
	}
	close(work)
	wg.Wait()
	defer func() {
		for _, c := range open {
			c.Close()
		}
	}()
	if ok.Load() != 8 || refused.Load() != 4000-8 || failed.Load() != 0 {
		t.Fatalf("4000 streams from one address: %d served, %d refused, %d failed; want 8 (max_streams_per_ip), the rest refused",
			ok.Load(), refused.Load(), failed.Load())
	}
	if rss := peakRSS(t, cmd.Process.Pid); rss > 64<<20 {
		t.Errorf("the gateway's peak memory: %d MB, want under 64", rss>>20)
	}
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}
	other := &http.Client{Transport: &http.Transport{DialContext: d.DialContext}}
	resp, err := other.Get("http://" + metricsAddr + "/events")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("a stream from another address: %v %v", resp, err)
	}
	resp.Body.Close()
	h := modbus.NewTCPClientHandler(addr)
	h.SlaveId, h.Timeout = 1, 2*time.Second
	defer h.Close()
	if _, err := modbus.NewClient(h).ReadHoldingRegisters(0, 10); err != nil {
		t.Fatalf("a Modbus read beside them: %v\n%s", err, log.String())
	}
}

// TestReloadFromABrowser: POST /-/reload is refused when it is what a
// web page could make a browser send (no header, a foreign Host or
// Origin), and done for mcpgw reload.
func TestReloadFromABrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binary")
	}
	metricsAddr := freeAddr(t)
	cfg := writeConfig(t, fmt.Sprintf("[server]\nlisten = \"127.0.0.1:0\"\n[metrics]\nlisten = %q\n[[bus]]\nname = \"l1\"\nport = \"/dev/ttyMCPGW-missing\"\nunits = [1]\n", metricsAddr))
	_, log := startGateway(t, nil, cfg, "metrics and health checks listening")
	post := func(host, origin string, header bool) int {
		req, _ := http.NewRequest(http.MethodPost, "http://"+metricsAddr+gateway.ReloadPath, strings.NewReader(""))
		if host != "" {
			req.Host = host
		}
		if origin != "" {
			req.Header.Set("Origin", origin)
		}
		if header {
			req.Header.Set(gateway.ReloadHeader, "1")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, c := range []struct {
		name, host, origin string
		header             bool
	}{
		{"a form's simple POST", "", "", false},
		{"DNS rebinding", "evil.example", "http://evil.example", true},
		{"a foreign page", "", "http://evil.example", true},
	} {
		if code := post(c.host, c.origin, c.header); code != http.StatusForbidden {
			t.Errorf("%s: %d, want 403", c.name, code)
		}
	}
	if strings.Contains(log.String(), "configuration reloaded") {
		t.Fatal("a refused request reloaded")
	}
	if out, err := exec.Command(mcpgwBinary(t), "reload", "-config", cfg).CombinedOutput(); err != nil {
		t.Fatalf("mcpgw reload: %v\n%s", err, out)
	}
}

// TestLogAndCaptureNotWorldReadable: the log file and a capture hold
// every client and value: created 0640, whatever the umask allows.
func TestLogAndCaptureNotWorldReadable(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binary")
	}
	old := syscall.Umask(0o002)
	defer syscall.Umask(old)
	dir := t.TempDir()
	logPath, capPath := filepath.Join(dir, "mcpgw.log"), filepath.Join(dir, "line.pcap")
	if err := os.WriteFile(capPath, nil, 0o666); err != nil { // an earlier capture, open to all
		t.Fatal(err)
	}
	addr := freeAddr(t)
	cfg := writeConfig(t, fmt.Sprintf("[server]\nlisten = %q\n[log]\nfile = %q\n[[bus]]\nname = \"l1\"\nport = %q\nparity = \"N\"\nunits = [1]\ncapture = %q\n",
		addr, logPath, simulated(t), capPath))
	cmd := exec.Command(mcpgwBinary(t), "run", "-config", cfg)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() }()
	for end := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if b, _ := os.ReadFile(logPath); bytes.Contains(b, []byte("gateway listening")) {
			break
		}
		if time.Now().After(end) {
			t.Fatal("nothing logged")
		}
	}
	for _, p := range []string{logPath, capPath} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if m := fi.Mode().Perm(); m != 0o640 {
			t.Errorf("%s: mode %o, want 640", filepath.Base(p), m)
		}
	}
}

// syscallGroups reads systemd's system call groups (systemd-analyze
// syscall-filter): each group's calls, its nested groups expanded.
func syscallGroups(t *testing.T) map[string]map[string]bool {
	t.Helper()
	out, err := exec.Command("systemd-analyze", "syscall-filter").Output()
	if err != nil {
		t.Fatal(err)
	}
	raw := map[string][]string{}
	var cur string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		f := strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(line, "@"):
			cur = f
		case f == "" || strings.HasPrefix(f, "#"):
		case cur != "":
			raw[cur] = append(raw[cur], f)
		}
	}
	groups := map[string]map[string]bool{}
	var expand func(g string) map[string]bool
	expand = func(g string) map[string]bool {
		if s, ok := groups[g]; ok {
			return s
		}
		s := map[string]bool{}
		groups[g] = s
		for _, m := range raw[g] {
			if strings.HasPrefix(m, "@") {
				for c := range expand(m) {
					s[c] = true
				}
			} else {
				s[m] = true
			}
		}
		return s
	}
	for g := range raw {
		expand(g)
	}
	return groups
}

// TestSystemCallsWithinTheUnit: every system call the gateway makes
// while it opens a serial port, listens, serves a client, writes its
// state and log, reloads and stops is in the systemd unit's
// SystemCallFilter (@system-service): the unit's sandbox does not break
// it. strace records the calls.
func TestSystemCallsWithinTheUnit(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binary under strace")
	}
	for _, tool := range []string{"strace", "systemd-analyze"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("%s is not installed: .ci/run must install it", tool)
			}
			t.Skipf("%s is not installed", tool)
		}
	}
	unit, err := os.ReadFile("../../packaging/mcpgw.service")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^SystemCallFilter=(\S+)$`).FindAllSubmatch(unit, -1)
	if len(m) != 1 || string(m[0][1]) != "@system-service" {
		t.Fatalf("the unit's SystemCallFilter: %q, want @system-service alone (the test checks against it)", m)
	}
	allowed := syscallGroups(t)["@system-service"]
	if len(allowed) < 100 {
		t.Fatalf("@system-service has %d calls: systemd-analyze's listing not understood", len(allowed))
	}
	dir := t.TempDir()
	trace := filepath.Join(dir, "strace")
	metricsAddr, addr := freeAddr(t), freeAddr(t)
	cfg := writeConfig(t, fmt.Sprintf("[server]\nlisten = %q\n[metrics]\nlisten = %q\n[log]\nfile = %q\n[[bus]]\nname = \"l1\"\nport = %q\nparity = \"N\"\nunits = [1, 2]\ncapture = %q\n",
		addr, metricsAddr, filepath.Join(dir, "mcpgw.log"), simulated(t), filepath.Join(dir, "l1.pcap")))
	cmd, _ := startGateway(t, []string{"strace", "-f", "-qq", "-o", trace}, cfg, "")
	for end := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if b, _ := os.ReadFile(filepath.Join(dir, "mcpgw.log")); bytes.Contains(b, []byte("metrics and health checks listening")) {
			break
		}
		if time.Now().After(end) {
			t.Fatal("the gateway did not start under strace")
		}
	}
	h := modbus.NewTCPClientHandler(addr)
	h.SlaveId, h.Timeout = 1, 5*time.Second
	if _, err := modbus.NewClient(h).ReadHoldingRegisters(0, 10); err != nil {
		t.Fatal(err)
	}
	h.Close()
	for _, p := range []string{"/metrics", "/", "/readyz"} {
		if resp, err := http.Get("http://" + metricsAddr + p); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}
	if out, err := exec.Command(mcpgwBinary(t), "reload", "-config", cfg).CombinedOutput(); err != nil {
		t.Fatalf("reload: %v\n%s", err, out)
	}
	// Signals go to the gateway, strace's child.
	kids, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", cmd.Process.Pid, cmd.Process.Pid))
	pid, err2 := strconv.Atoi(strings.TrimSpace(string(kids)))
	if err != nil || err2 != nil {
		t.Fatalf("the gateway under strace: %q %v %v", kids, err, err2)
	}
	syscall.Kill(pid, syscall.SIGHUP)
	time.Sleep(200 * time.Millisecond)
	syscall.Kill(pid, syscall.SIGTERM)
	cmd.Wait()
	b, err := os.ReadFile(trace)
	if err != nil {
		t.Fatal(err)
	}
	call := regexp.MustCompile(`^\d+\s+(?:<\.\.\. )?([a-z0-9_]+)[( ]`)
	seen := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if m := call.FindStringSubmatch(sc.Text()); m != nil {
			seen[m[1]] = true
		}
	}
	if len(seen) < 20 {
		t.Fatalf("only %d system calls recorded: strace's output not understood", len(seen))
	}
	for c := range seen {
		if c != "execve" && !allowed[c] { // execve: strace's own start of the binary
			t.Errorf("system call %s is outside the unit's @system-service filter", c)
		}
	}
}

// TestReloadThroughWebConfig: behind metrics.web_config (HTTPS, basic
// auth), mcpgw reload says which flags it needs, and with them reloads.
func TestReloadThroughWebConfig(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binary")
	}
	for _, tool := range []string{"openssl", "/usr/bin/python3"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed", tool)
		}
	}
	pem := testPKI(t, struct{ name, ext string }{"web", "subjectAltName = IP:127.0.0.1\n"})
	hash, err := exec.Command("/usr/bin/python3", "-c", "import bcrypt; print(bcrypt.hashpw(b'pw', bcrypt.gensalt(rounds=10)).decode())").Output()
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("python3-bcrypt: %v", err)
		}
		t.Skipf("python3-bcrypt: %v", err)
	}
	web := pem("web", "yml")
	os.WriteFile(web, []byte(fmt.Sprintf("tls_server_config:\n  cert_file: %s\n  key_file: %s\nbasic_auth_users:\n  ops: %s", pem("web", "crt"), pem("web", "key"), hash)), 0o600)
	os.WriteFile(pem("pw", "txt"), []byte("pw\n"), 0o600)
	metricsAddr := freeAddr(t)
	cfg := writeConfig(t, fmt.Sprintf("[server]\nlisten = \"127.0.0.1:0\"\n[metrics]\nlisten = %q\nweb_config = %q\n[[bus]]\nname = \"l1\"\nport = \"/dev/ttyMCPGW-missing\"\nunits = [1]\n", metricsAddr, web))
	startGateway(t, nil, cfg, "metrics and health checks listening")
	bin := mcpgwBinary(t)
	out, err := exec.Command(bin, "reload", "-config", cfg).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "-web-user") {
		t.Fatalf("reload without credentials: %v\n%s", err, out)
	}
	out, err = exec.Command(bin, "reload", "-config", cfg, "-web-user", "ops", "-web-password-file", pem("pw", "txt")).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "certificate") {
		t.Fatalf("reload without the listener's CA: %v\n%s", err, out)
	}
	out, err = exec.Command(bin, "reload", "-config", cfg, "-web-user", "ops", "-web-password-file", pem("pw", "txt"), "-web-ca", pem("ca", "crt")).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "reloaded") {
		t.Fatalf("reload with credentials: %v\n%s", err, out)
	}
}
