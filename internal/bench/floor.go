//go:build linux

package bench

import (
	"bufio"
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/mcpgw/mcpgw/internal/loadtest"
)

// benchFloor measures what a transaction's wakeups cost the machine: a
// minimal relay written in C (src, built with cc: one thread, three
// wakeups a transaction, see testdata/interop/floor_relay.c) on a paced
// line like paced, polled as the gateway was in the throughput table. The
// gateway's CPU per transaction is judged beside it, since on a virtual
// machine a wakeup alone can cost tens of microseconds. It returns the
// relay's CPU per transaction by clients (1 and 16); none if it could not
// be built.
func benchFloor(ctx context.Context, rep *report, src string, paced *benchLine, window time.Duration) (map[int]time.Duration, error) {
	bin, cleanup, err := buildC(src)
	if err != nil {
		rep.printf("\nThe floor relay was skipped: %v.\n", err)
		return nil, nil
	}
	defer cleanup()
	l := &benchLine{name: "floor", baud: paced.baud, paced: true, units: paced.units, noTwin: true}
	if err := l.open(ctx); err != nil {
		return nil, err
	}
	defer l.close()
	cmd := exec.CommandContext(ctx, bin, l.gwPath, strconv.Itoa(l.baud))
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	var port int
	line, err := bufio.NewReader(out).ReadString('\n')
	if _, err2 := fmt.Sscanf(line, "listening %d", &port); err != nil || err2 != nil {
		return nil, fmt.Errorf("floor relay: want its port, got %q (%v)", strings.TrimSpace(line), err)
	}
	rep.printf("\nThe floor beside it: a relay that does the least a Modbus TCP to RTU relay can (testdata/interop/floor_relay.c, in C: one thread, no checks but the CRC, and three wakeups a transaction: the request, t3.5, the answer's last byte; it does not hand an exception on at its fifth byte, which costs the gateway a fourth), on a line of its own like the gateway's, polled the same way. What it costs a transaction is what this machine's wakeups cost.\n\n")
	rep.printf("| clients | transactions | per second | wrong | relay CPU per transaction | its context switches per transaction |\n|---|---|---|---|---|---|\n")
	cpu := map[int]time.Duration{}
	for _, c := range []int{1, 16} {
		cpu0, sw0 := schedOf(cmd.Process.Pid)
		r := loadtest.Run(ctx, loadtest.Config{Addr: fmt.Sprintf("127.0.0.1:%d", port), Clients: c, Duration: window, Units: l.units, Qty: 10, Timeout: 2 * time.Second, Seed: 4})
		cpu1, sw1 := schedOf(cmd.Process.Pid)
		if err := sane(fmt.Sprintf("floor relay, %d clients", c), r); err != nil {
			return nil, err
		}
		n := max(1, r.Transactions)
		cpu[c] = (cpu1 - cpu0) / time.Duration(n)
		rep.printf("| %d | %d | %.1f | %d | %s | %.1f |\n", c, r.OK, float64(r.OK)/r.Elapsed.Seconds(), r.Wrong, us(cpu[c]), float64(sw1-sw0)/float64(n))
	}
	return cpu, nil
}
