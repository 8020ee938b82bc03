package main

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/goburrow/modbus"
)

// mcpgwBinary builds the command once for the tests that run it as a process,
// and returns its path.
func mcpgwBinary(t *testing.T) string {
	t.Helper()
	build.Do(func() {
		dir, err := os.MkdirTemp("", "mcpgw-test-")
		if err != nil {
			build.err = err
			return
		}
		build.dir, build.bin = dir, filepath.Join(dir, "mcpgw")
		if out, err := exec.Command("go", "build", "-o", build.bin, ".").CombinedOutput(); err != nil {
			build.err = fmt.Errorf("%v\n%s", err, out)
		}
	})
	if build.err != nil {
		t.Fatalf("build: %v", build.err)
	}
	return build.bin
}

var build struct {
	sync.Once
	dir, bin string
	err      error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if build.dir != "" {
		os.RemoveAll(build.dir)
	}
	os.Exit(code)
}

func writeConfig(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestExitStatus(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no command", nil, 2, "Usage:"},
		{"unknown command", []string{"frobnicate"}, 2, `unknown command "frobnicate"`},
		{"missing config file", []string{"run", "-config", "/nonexistent/config.toml"}, 1, "no such file"},
		{"bad key", []string{"run", "-config", writeConfig(t, "[[bus]]\nname=\"a\"\nport=\"/dev/x\"\nunits=[\"1\"]\nbaud=\"fast\"\n")}, 1, "baud"},
		{"bad parity", []string{"run", "-config", writeConfig(t, "[[bus]]\nname=\"a\"\nport=\"/dev/x\"\nunits=[\"1\"]\nparity=\"Q\"\n")}, 1, `bus "a": parity "Q"`},
		{"listen in use", []string{"run", "-config", writeConfig(t, "[server]\nlisten=\""+busy.Addr().String()+"\"\n[log]\nlevel=\"error\"\n[[bus]]\nname=\"a\"\nport=\"/dev/x\"\nunits=[\"1\"]\n")}, 1, "server.listen"},
		{"sim without port", []string{"sim"}, 2, "-port is required"},
		{"poll without target", []string{"poll"}, 2, "-tcp host:port or -rtu"},
		{"version", []string{"version"}, 0, "mcpgw"},
		{"check a good file", []string{"check", "-config", writeConfig(t, "[[bus]]\nname=\"a\"\nport=\"/dev/x\"\nunits=[1, 2, \"5-8\"]\n")}, 0, "ok: 1 line(s), 6 unit(s)"},
		{"check the shipped file", []string{"check", "-config", "../../config.toml"}, 0, "ok: 1 line(s), 247 unit(s)"},
		{"check a bad file", []string{"check", "-config", writeConfig(t, "[[bus]]\nname=\"a\"\nport=\"/dev/x\"\nunits=[1, 300]\n")}, 1, `bus "a": units: "300"`},
		{"check missing TLS files", []string{"check", "-config", writeConfig(t, "[server.tls]\nlisten=\"127.0.0.1:0\"\ncert=\"/nonexistent/s.crt\"\nkey=\"/nonexistent/s.key\"\nclient_ca=\"/nonexistent/ca.crt\"\n[[bus]]\nname=\"a\"\nport=\"/dev/x\"\nunits=[1]\n")}, 1, "server.tls.cert: open /nonexistent/s.crt"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := run(tt.args, &out, &errb)
			if code != tt.code || !strings.Contains(out.String()+errb.String(), tt.want) {
				t.Fatalf("exit %d, want %d; output %q, want it to contain %q", code, tt.code, out.String()+errb.String(), tt.want)
			}
		})
	}
}

// TestRunWithMissingPort: a serial port missing at start-up is retried,
// not fatal; its units get 0x0A meanwhile; SIGTERM stops the process
// cleanly with status 0.
func TestRunWithMissingPort(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := mcpgwBinary(t)
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := l.Addr().String()
	l.Close()
	cfg := writeConfig(t, "[server]\nlisten=\""+addr+"\"\n[log]\nformat=\"json\"\n[[bus]]\nname=\"gone\"\nport=\"/dev/ttyMCPGW-missing\"\nunits=[\"1-5\"]\n")
	var stderr bytes.Buffer
	// systemd's notify socket: the process says it is ready once it
	// listens, and stopping when it stops.
	notifyPath := filepath.Join(t.TempDir(), "notify")
	notify, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notifyPath, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer notify.Close()
	cmd := exec.Command(bin, "run", "-config", cfg)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+notifyPath)
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	readNotify := func() string {
		buf := make([]byte, 64)
		notify.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, _ := notify.Read(buf)
		return string(buf[:n])
	}
	if got := readNotify(); got != "READY=1" {
		t.Fatalf("systemd notify: %q, want READY=1", got)
	}
	h := modbus.NewTCPClientHandler(addr)
	h.SlaveId, h.Timeout = 1, 2*time.Second
	for range 100 {
		if h.Connect() == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	defer h.Close()
	_, err = modbus.NewClient(h).ReadHoldingRegisters(0, 1)
	if me, ok := err.(*modbus.ModbusError); !ok || me.ExceptionCode != 0x0A {
		t.Fatalf("unit on a missing port: %v, want exception 0x0A", err)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	if got := readNotify(); got != "STOPPING=1" {
		t.Errorf("systemd notify on SIGTERM: %q, want STOPPING=1", got)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, stderr.String())
	}
	log := stderr.String()
	for _, want := range []string{`"msg":"serial line down, retrying"`, `"line":"gone"`, `"msg":"gateway stopped"`, `"unit":1`, `"fc":3`} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %s:\n%s", want, log)
		}
	}
}

// TestLogFileReopenedOnSIGHUP: after logrotate moves the log file away
// and sends SIGHUP, the next lines go to a new file at the configured
// path.
func TestLogFileReopenedOnSIGHUP(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := mcpgwBinary(t)
	dir := t.TempDir()
	logPath := filepath.Join(dir, "mcpgw.log")
	cfg := writeConfig(t, "[server]\nlisten=\"127.0.0.1:0\"\n[log]\nfile=\""+logPath+"\"\n[[bus]]\nname=\"gone\"\nport=\"/dev/ttyMCPGW-missing\"\nunits=[1]\n")
	cmd := exec.Command(bin, "run", "-config", cfg)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	waitFor := func(path, text string) bool {
		for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
			if b, _ := os.ReadFile(path); strings.Contains(string(b), text) {
				return true
			}
		}
		return false
	}
	if !waitFor(logPath, "gateway listening") {
		t.Fatal("nothing logged to log.file")
	}
	if err := os.Rename(logPath, logPath+".1"); err != nil {
		t.Fatal(err)
	}
	cmd.Process.Signal(syscall.SIGHUP)
	if !waitFor(logPath, "configuration reloaded") {
		t.Fatal("after SIGHUP, nothing was logged to a new file at log.file")
	}
	if b, _ := os.ReadFile(logPath + ".1"); strings.Contains(string(b), "configuration reloaded") {
		t.Fatal("the reload was logged to the rotated file")
	}
	cmd.Process.Signal(syscall.SIGTERM)
	cmd.Wait()
}

// TestReloadCommand: mcpgw reload checks the file, then has the running
// gateway reload it through metrics.listen and prints what it applied; a
// file that fails the check is not sent for, and the gateway runs on.
func TestReloadCommand(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := mcpgwBinary(t)
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	metricsAddr := l.Addr().String()
	l.Close()
	base := "[server]\nlisten=\"127.0.0.1:0\"\n[metrics]\nlisten=\"" + metricsAddr + "\"\n" +
		"[[bus]]\nname=\"one\"\nport=\"/dev/ttyMCPGW-missing1\"\nunits=[1]\n"
	cfg := writeConfig(t, base)
	stderr := logOf(t)
	cmd := exec.Command(bin, "run", "-config", cfg)
	cmd.Stderr = stderr.f
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	for end := time.Now().Add(10 * time.Second); !strings.Contains(stderr.String(), "metrics and health checks listening"); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("the gateway did not start:\n%s", stderr.String())
		}
	}
	reload := func() (string, error) {
		out, err := exec.Command(bin, "reload", "-config", cfg).CombinedOutput()
		return string(out), err
	}
	if err := os.WriteFile(cfg, []byte(base+"[[bus]]\nname=\"two\"\nport=\"/dev/ttyMCPGW-missing2\"\nunits=[2]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := reload()
	if err != nil || !strings.Contains(out, `bus "two": added`) {
		t.Fatalf("reload adding a line: %v\n%s", err, out)
	}
	if !strings.Contains(stderr.String(), "reload: configuration reloaded") {
		t.Fatalf("the gateway did not log the reload:\n%s", stderr.String())
	}
	// A unit id out of range: refused by the command, naming the key.
	if err := os.WriteFile(cfg, []byte(strings.Replace(base, "units=[1]", "units=[300]", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err = reload()
	if err == nil || !strings.Contains(out, "units") || !strings.Contains(out, "not asked") {
		t.Fatalf("reload of an invalid file: %v\n%s", err, out)
	}
	if strings.Contains(stderr.String(), "configuration refused") || cmd.ProcessState != nil {
		t.Fatalf("the gateway saw the invalid file:\n%s", stderr.String())
	}
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit: %v\n%s", err, stderr.String())
	}
}

// processLog is a file a process writes its log to, read as it grows.
type processLog struct{ f *os.File }

func logOf(t *testing.T) processLog {
	f, err := os.Create(filepath.Join(t.TempDir(), "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return processLog{f}
}

func (l processLog) String() string {
	b, _ := os.ReadFile(l.f.Name())
	return string(b)
}

// TestOneProcessor: mcpgw run takes one processor unless GOMAXPROCS asks
// for a number.
func TestOneProcessor(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	runtime.GOMAXPROCS(2)
	t.Setenv("GOMAXPROCS", "2")
	oneProcessor()
	if n := runtime.GOMAXPROCS(0); n != 2 {
		t.Errorf("with GOMAXPROCS=2 set: %d processors, want 2", n)
	}
	os.Unsetenv("GOMAXPROCS")
	oneProcessor()
	if n := runtime.GOMAXPROCS(0); n != 1 {
		t.Errorf("with GOMAXPROCS unset: %d processors, want 1", n)
	}
}

// freeAddr returns a loopback address nothing listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// testPKI makes, with the openssl command line, a CA ("ca") and
// certificates it signs, as PEM files name.crt and name.key in a
// directory anyone may read (test keys only: Mosquitto started as root
// reads them as user mosquitto). path names a file of it.
func testPKI(t *testing.T, leaves ...struct{ name, ext string }) (path func(name, ext string) string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "mcpgw-pki")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	path = func(name, ext string) string { return filepath.Join(dir, name+"."+ext) }
	openssl := func(args ...string) {
		if out, err := exec.Command("openssl", args...).CombinedOutput(); err != nil {
			t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
		"-keyout", path("ca", "key"), "-out", path("ca", "crt"), "-subj", "/CN=test-ca", "-days", "2")
	for i, leaf := range leaves {
		os.WriteFile(path(leaf.name, "ext"), []byte(leaf.ext), 0o600)
		openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
			"-keyout", path(leaf.name, "key"), "-out", path(leaf.name, "csr"), "-subj", "/CN="+leaf.name)
		openssl("x509", "-req", "-in", path(leaf.name, "csr"), "-CA", path("ca", "crt"), "-CAkey", path("ca", "key"),
			"-set_serial", fmt.Sprint(10+i), "-days", "2", "-extfile", path(leaf.name, "ext"), "-out", path(leaf.name, "crt"))
		os.Chmod(path(leaf.name, "key"), 0o644)
	}
	return path
}
