//go:build linux

package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/mcpgw/mcpgw/internal/loadtest"
	"github.com/mcpgw/mcpgw/pkg/tools/sim"
)

// SoakOptions are the soak's knobs (mcpgw-bench soak's flags).
type SoakOptions struct {
	Gateway  string // the mcpgw binary: sets the package's Gateway
	Duration time.Duration
	Clients  int
	Units    []byte
	Faults   sim.Faults
}

// Soak runs many checking clients through a gateway process against
// faulty simulated devices for a while, and fails on a wrong answer, no
// right answer at all, or memory that keeps growing.
func Soak(ctx context.Context, opts SoakOptions, stdout, stderr io.Writer) error {
	if opts.Gateway != "" {
		Gateway = opts.Gateway
	}
	ids := opts.Units
	units := unitList(ids)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	line, dev, err := sim.OnPty(ctx, ids, opts.Faults, nil)
	if err != nil {
		return err
	}
	defer line.Close()

	gw, addr, err := startGatewayProcess(fmt.Sprintf(`[[bus]]
name = "soak"
port = %q
parity = "N"
stop_bits = 2
timeout = "100ms"
retries = 2
units = [%s]
`, line.Path, units), opts.Clients+10, "error", stderr)
	if err != nil {
		return err
	}
	defer gw.stop()

	fmt.Fprintf(stdout, "soak: %d clients for %v against units %s with faults %+v; gateway pid %d\n",
		opts.Clients, opts.Duration, units, opts.Faults, gw.cmd.Process.Pid)
	load := loadtest.Config{Addr: addr, Clients: opts.Clients, Units: ids, Qty: 10, Timeout: 30 * time.Second}
	warm := load
	warm.Duration = 3 * time.Second
	loadtest.Run(ctx, warm)
	rssStart := gw.rss()
	peak := rssStart
	done := make(chan *loadtest.Result)
	go func() {
		l := load
		l.Duration = opts.Duration
		done <- loadtest.Run(ctx, l)
	}()
	tick := time.NewTicker(10 * time.Second)
	defer tick.Stop()
	var res *loadtest.Result
	for res == nil {
		select {
		case res = <-done:
		case <-tick.C:
			peak = max(peak, gw.rss())
		}
	}
	rssEnd := gw.rss()
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

// unitList is ids as a TOML array's items: 1, 2, 3.
func unitList(ids []byte) string {
	s := make([]string, len(ids))
	for i, u := range ids {
		s[i] = strconv.Itoa(int(u))
	}
	return strings.Join(s, ", ")
}
