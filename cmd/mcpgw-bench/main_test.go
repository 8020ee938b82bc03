//go:build linux

package main

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestBenchSmoke builds mcpgw and mcpgw-bench and runs the bench at a
// tiny scale: every part of it must run and every answer be right. It
// asserts no timing: those are the benchmark's to report, not a test's to
// judge on a shared machine.
func TestBenchSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binaries and runs lines in processes of their own")
	}
	dir := t.TempDir()
	gw, self := filepath.Join(dir, "mcpgw"), filepath.Join(dir, "mcpgw-bench")
	for bin, pkg := range map[string]string{gw: "../mcpgw", self: "."} {
		if out, err := exec.Command("go", "build", "-o", bin, pkg).CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v\n%s", pkg, err, out)
		}
	}
	out, err := exec.Command(self, "-gateway", gw, "-scale", "0.05", "-many", "40", "-out", "",
		"-probe", "../../testdata/interop/latency_probe.c", "-floor", "../../testdata/interop/floor_relay.c",
		"-slave", "../../testdata/interop/rtu_slave.c").CombinedOutput()
	if err != nil {
		t.Fatalf("bench: %v\n%s", err, out)
	}
	for _, want := range []string{"## Latency", "## Throughput", "40 clients at once", "| zero wrong answers | 0 | yes |", "| 40 clients: all served | 40 | yes |",
		"polls in turn as an RTU master on the twin line", "unpaced pty, CPUs kept out of idle",
		"## Modbus/TCP Security (TLS)", "| Modbus/TCP Security | 50 |", "0 failed.",
		"The floor beside it", "(the floor relay: ", "## Absent devices", "The fault mix: the device drops"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("bench output lacks %q:\n%s", want, out)
		}
	}
}

// TestNotInTheGateway: the bench and its helpers are not commands of the
// shipped binary.
func TestNotInTheGateway(t *testing.T) {
	out, _ := exec.Command("go", "run", "../mcpgw", "--help").CombinedOutput()
	for _, cmd := range []string{"bench", "soak", "simline", "tcpecho", "spin"} {
		if strings.Contains(string(out), "mcpgw "+cmd) {
			t.Errorf("mcpgw --help lists %s", cmd)
		}
	}
	for _, cmd := range []string{"run", "check", "reload", "demo", "sim", "poll", "replay", "version"} {
		if !strings.Contains(string(out), "mcpgw "+cmd) {
			t.Errorf("mcpgw --help lacks %s:\n%s", cmd, out)
		}
	}
}
