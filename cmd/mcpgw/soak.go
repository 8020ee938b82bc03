package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/mcpgw/mcpgw/pkg/config"
	"github.com/mcpgw/mcpgw/pkg/loadtest"
	"github.com/mcpgw/mcpgw/pkg/serialport"
	"github.com/mcpgw/mcpgw/pkg/sim"
)

// cmdSoak runs the gateway (this binary, as its own process) against
// faulty simulated devices on a virtual line, with many clients checking
// every answer, and reports what happened and the gateway's memory.
func cmdSoak(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("soak", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dur := fs.Duration("duration", 3*time.Minute, "how long to run")
	clients := fs.Int("clients", 50, "concurrent clients")
	units := fs.String("units", "1-5", "simulated unit ids")
	faults := faultFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	ids, err := config.ParseUnits(strings.Split(*units, ","))
	if err != nil {
		return usageErr("-units: %v", err)
	}
	// Defaults: a bit of every fault, unless flags set their own.
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if !set["drop"] {
		faults.Drop = 0.03
	}
	if !set["corrupt"] {
		faults.Corrupt = 0.03
	}
	if !set["late"] {
		faults.Late, faults.LateBy = 0.01, 150*time.Millisecond
	}
	if !set["noise"] {
		faults.Noise = 0.03
	}

	line, err := serialport.NewPty()
	if err != nil {
		return err
	}
	defer line.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dev := &sim.Line{Port: line.Device, Units: sim.NewUnits(ids, 10000), Faults: *faults}
	go dev.Serve(ctx)

	addr, err := freeAddr()
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "mcpgw-soak")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	cfgPath := filepath.Join(dir, "config.toml")
	cfgText := fmt.Sprintf(`[server]
listen = %q
max_conns = %d
[log]
level = "error"
[[bus]]
name = "soak"
port = %q
parity = "N"
stop_bits = 2
timeout = "100ms"
retries = 2
units = [%q]
`, addr, *clients+10, line.Path, *units)
	if err := os.WriteFile(cfgPath, []byte(cfgText), 0o644); err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	gw := exec.Command(self, "run", "-config", cfgPath)
	gw.Stderr = stderr
	if err := gw.Start(); err != nil {
		return err
	}
	defer func() { gw.Process.Signal(os.Interrupt); gw.Wait() }()
	if err := waitListening(addr, 5*time.Second); err != nil {
		return err
	}

	fmt.Fprintf(stdout, "soak: %d clients for %v against units %s with faults %+v; gateway pid %d\n",
		*clients, *dur, *units, *faults, gw.Process.Pid)
	load := loadtest.Config{Addr: addr, Clients: *clients, Units: ids, Qty: 10, Timeout: 30 * time.Second}
	warm := load
	warm.Duration = 3 * time.Second
	loadtest.Run(ctx, warm)
	rssStart := rssKB(gw.Process.Pid)
	peak := rssStart
	done := make(chan *loadtest.Result)
	go func() {
		l := load
		l.Duration = *dur
		done <- loadtest.Run(ctx, l)
	}()
	tick := time.NewTicker(10 * time.Second)
	defer tick.Stop()
	var res *loadtest.Result
	for res == nil {
		select {
		case res = <-done:
		case <-tick.C:
			peak = max(peak, rssKB(gw.Process.Pid))
		}
	}
	rssEnd := rssKB(gw.Process.Pid)
	peak = max(peak, rssEnd)

	least, most := res.Fairness()
	fmt.Fprintf(stdout, "transactions  %d (%.0f/s)\n", res.Transactions, float64(res.Transactions)/res.Elapsed.Seconds())
	fmt.Fprintf(stdout, "right answers %d\n", res.OK)
	fmt.Fprintf(stdout, "wrong answers %d\n", res.Wrong)
	for _, code := range slices.Sorted(mapKeys(res.Exceptions)) {
		fmt.Fprintf(stdout, "exception %#02x %d\n", code, res.Exceptions[code])
	}
	for kind, n := range res.Errors {
		fmt.Fprintf(stdout, "client error  %s: %d\n", kind, n)
	}
	fmt.Fprintf(stdout, "per client    fewest %d, most %d right answers\n", least, most)
	fmt.Fprintf(stdout, "latency       p50 %v, p99 %v\n", res.Percentile(50), res.Percentile(99))
	fmt.Fprintf(stdout, "device        %+v\n", dev.Stats())
	fmt.Fprintf(stdout, "gateway RSS   start %d KiB, end %d KiB, peak %d KiB\n", rssStart, rssEnd, peak)
	switch {
	case res.Wrong > 0:
		return fmt.Errorf("%d WRONG ANSWERS, first: %s", res.Wrong, res.FirstWrong)
	case res.OK == 0:
		return fmt.Errorf("no right answers at all")
	case rssStart > 0 && rssEnd > rssStart*3/2+8*1024:
		return fmt.Errorf("gateway memory grew from %d KiB to %d KiB", rssStart, rssEnd)
	}
	fmt.Fprintln(stdout, "soak: PASS")
	return nil
}

func mapKeys[K comparable, V any](m map[K]V) func(func(K) bool) {
	return func(yield func(K) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// freeAddr returns a loopback address with a port nobody listens on.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func waitListening(addr string, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("gateway not listening on %s after %v: %w", addr, within, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// rssKB reads a process's resident set size from /proc; 0 if unknown.
func rssKB(pid int) int {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(rest), " kB"))
			return n
		}
	}
	return 0
}
