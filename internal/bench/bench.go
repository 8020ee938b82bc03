//go:build linux

package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/mcpgw/mcpgw/internal/loadtest"
	"github.com/mcpgw/mcpgw/pkg/rtu"
	"github.com/mcpgw/mcpgw/pkg/tools/sim"
	asciiport "github.com/mcpgw/mcpgw/pkg/wire/ascii"
	"github.com/mcpgw/mcpgw/pkg/wire/serialport"
	"golang.org/x/sys/unix"
)

// benchLine is one kind of line in the benchmark: the gateway gets one,
// the direct master an identical twin, each with the same simulated units.
type benchLine struct {
	name    string
	baud    int // nominal; 11-bit characters (8N2)
	paced   bool
	units   []byte        // the simulated devices
	dead    []byte        // configured on the line, but no device answers
	faults  sim.Faults    // how the devices misbehave
	timeout time.Duration // the line's timeout, with one retry; 0: 500 ms and the default retries
	clock   bool          // the devices' first registers hold their clock (see clockValue)
	ascii   bool          // the devices speak Modbus ASCII
	noTwin  bool          // no twin line, no direct master

	gwPath   string          // the gateway's end of its line
	twinPath string          // the direct master's end of the twin line
	master   serialport.Port // twinPath, open
	gap      time.Duration
	closer   []func()
	sim      *exec.Cmd     // the simline serving gwPath
	simOut   *bufio.Reader // its stdout, after the path
}

func (l *benchLine) char() time.Duration { return charTime(l.baud) }

// charTime is one 8E1 character at baud.
func charTime(baud int) time.Duration {
	return serialport.Settings{Baud: baud, DataBits: 8, Parity: 'E', StopBits: 1}.CharTime()
}

// ids returns the line's unit ids as decimal strings.
func (l *benchLine) ids() []string {
	ids := make([]string, len(l.units))
	for k, u := range l.units {
		ids[k] = strconv.Itoa(int(u))
	}
	return ids
}

// open makes the gateway's line and the twin, each with its devices (and
// its pacer) in a process of its own (mcpgw-bench simline), so that neither the
// gateway nor the direct master shares a process with them.
func (l *benchLine) open(ctx context.Context) error {
	l.gap = rtu.FrameGap(l.char())
	settings := serialport.Settings{Baud: l.baud, DataBits: 8, Parity: 'N', StopBits: 2}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	ids := l.ids()
	paths := make([]string, 2)
	if l.noTwin {
		paths = paths[:1]
	}
	for i := range paths {
		f := l.faults
		args := []string{"simline", "-baud", strconv.Itoa(l.baud), "-paced=" + strconv.FormatBool(l.paced), "-units", strings.Join(ids, ","),
			"-drop", fmt.Sprint(f.Drop), "-corrupt", fmt.Sprint(f.Corrupt), "-crc-only=" + strconv.FormatBool(f.CRCOnly), "-late", fmt.Sprint(f.Late), "-late-by", f.LateBy.String(),
			"-seed", strconv.FormatUint(f.Seed, 10), "-clock=" + strconv.FormatBool(l.clock), "-ascii=" + strconv.FormatBool(l.ascii)}
		cmd := exec.CommandContext(ctx, self, args...)
		out, err := cmd.StdoutPipe()
		if err != nil {
			return err
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			return err
		}
		l.closer = append(l.closer, func() { cmd.Process.Signal(os.Interrupt); cmd.Wait() })
		rd := bufio.NewReader(out)
		line, err := rd.ReadString('\n')
		if err != nil {
			return fmt.Errorf("simline: %w", err)
		}
		paths[i] = strings.TrimSpace(line)
		if i == 0 {
			l.sim, l.simOut = cmd, rd
		}
	}
	l.gwPath = paths[0]
	if l.noTwin {
		return nil
	}
	l.twinPath = paths[1]
	m, err := serialport.Open(paths[1], settings)
	if err != nil {
		return err
	}
	l.master = m
	l.closer = append(l.closer, func() { m.Close() })
	return nil
}

// SimlineOptions are a simulated line's (mcpgw-bench simline's flags).
type SimlineOptions struct {
	Baud   int        // nominal bit rate, 11-bit characters
	Paced  bool       // deliver bytes at the baud rate's pace
	Units  []byte     // the simulated units
	Faults sim.Faults // how they misbehave
	Clock  bool       // their first registers hold their clock (see clockValue)
	ASCII  bool       // they speak Modbus ASCII
	// Report, when it receives, makes Simline print the line's counters
	// as one line (see simStats): the faults its devices actually drew.
	Report <-chan os.Signal
}

// Simline is the bench's helper (mcpgw-bench simline): a virtual line with
// simulated units at its far end, as o says. It prints the near end's
// path and serves until ctx ends.
func Simline(ctx context.Context, o SimlineOptions, stdout io.Writer) error {
	baud := o.Baud
	var (
		path string
		dev  serialport.Port
	)
	if o.Paced {
		pl, err := serialport.NewPacedLine(charTime(baud))
		if err != nil {
			return err
		}
		defer pl.Close()
		if dev, err = serialport.Open(pl.DevicePath, serialport.Settings{Baud: baud, DataBits: 8, Parity: 'N', StopBits: 2}); err != nil {
			return err
		}
		defer dev.Close()
		path = pl.Path
	} else {
		p, err := serialport.NewPty()
		if err != nil {
			return err
		}
		defer p.Close()
		dev, path = p.Device, p.Path
	}
	// The devices end requests by their length; a long FrameGap keeps
	// scheduling jitter from looking like a gap inside a frame, which a
	// real device's UART would never see.
	s := &sim.Line{Port: dev, Units: sim.NewUnits(o.Units, 10000), FrameGap: 50 * time.Millisecond, Faults: o.Faults}
	if o.ASCII {
		s.Port = asciiport.New(dev)
	}
	if o.Clock {
		s.BeforeAnswer = stampClock
	}
	fmt.Fprintln(stdout, path)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-o.Report:
				st := s.Stats()
				fmt.Fprintf(stdout, "stats %d %d %d %d\n", st.Requests, st.Dropped, st.Corrupted, st.LateAnswers)
			}
		}
	}()
	return s.Serve(ctx)
}

// simStats asks the simulated devices at the gateway's end of l for
// their counters (SIGUSR1 to its simline, which prints them).
func (l *benchLine) simStats() (sim.Stats, error) {
	var st sim.Stats
	if l.sim == nil {
		return st, errors.New("simline: not running")
	}
	if err := l.sim.Process.Signal(unix.SIGUSR1); err != nil {
		return st, err
	}
	got := make(chan error, 1)
	go func() {
		line, err := l.simOut.ReadString('\n')
		if err == nil {
			_, err = fmt.Sscanf(line, "stats %d %d %d %d", &st.Requests, &st.Dropped, &st.Corrupted, &st.LateAnswers)
		}
		got <- err
	}()
	select {
	case err := <-got:
		return st, err
	case <-time.After(5 * time.Second):
		return st, errors.New("simline: no counters after 5s")
	}
}

func (l *benchLine) close() {
	for i := len(l.closer) - 1; i >= 0; i-- {
		l.closer[i]()
	}
}

// Options are the bench's knobs (mcpgw-bench's flags).
type Options struct {
	Gateway string  // the mcpgw binary to measure: sets the package's Gateway
	Out     string  // file to write the report to; empty: none
	Scale   float64 // multiplies request counts and durations
	Many    int     // clients in the many-clients run
	Probe   string  // libmodbus latency probe's source, built with cc; empty: skip
	Floor   string  // the floor relay's source, built with cc; empty: skip
	Slave   string  // the libmodbus RTU slave's source (the absent-devices rows), built with cc; empty: skip
	// Only runs one section that stands alone, "faster", "sparkplug", "uplink" (the node's store, failover), "status" (the page at its largest),
	// "wires", "pace" (a line that keeps its pace) or "absent" (absent
	// devices), and prints it (writing no file): for working on it.
	Only string
}

// Gateway is the mcpgw binary the bench and the soak run (mcpgw run);
// their own helpers (simline, tcpecho, spin) are subcommands of the
// running binary, mcpgw-bench (os.Executable).
var Gateway = "mcpgw"

// Run measures the gateway against a direct RTU master, side by side,
// prints the report to stdout and writes it to opts.Out. It runs the
// gateway, the simulated lines and its helpers as processes of this
// binary (mcpgw run, as Gateway) and of the bench's own (simline, tcpecho
// and spin, subcommands of mcpgw-bench).
func Run(ctx context.Context, opts Options, stdout, stderr io.Writer) error {
	n := func(v int) int { return max(1, int(float64(v)*opts.Scale)) }
	d := func(v time.Duration) time.Duration { return time.Duration(float64(v) * opts.Scale) }

	if opts.Gateway != "" {
		Gateway = opts.Gateway
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if opts.Only != "" {
		var rep report
		var err error
		var targets []target
		switch opts.Only {
		case "faster":
			targets, err = benchFaster(ctx, &rep, d, stderr)
		case "sparkplug":
			err = benchSparkplug(ctx, &rep, d, stderr)
		case "uplink":
			targets, err = benchUplink(ctx, &rep, d, stderr)
		case "status":
			targets, err = benchStatusPage(ctx, &rep, stderr)
		case "wires":
			err = benchWires(ctx, &rep, n, stderr)
		case "pace":
			targets, err = benchPaceAlone(ctx, &rep, d, stderr)
		case "absent":
			targets, err = benchAbsent(ctx, &rep, opts.Slave, n, d, stderr)
		default:
			return fmt.Errorf("-only %q: want faster, sparkplug, uplink, status, wires, pace or absent", opts.Only)
		}
		for _, t := range targets {
			rep.printf("| %s | %s | %v |\n", t.name, t.got, t.ok)
		}
		fmt.Fprint(stdout, rep.String())
		return err
	}
	lines := benchLines()
	for _, l := range lines {
		if err := l.open(ctx); err != nil {
			return err
		}
		defer l.close()
	}
	buses := busesFor(lines)
	// A Modbus/TCP Security listener beside the plain one.
	pkiDir, err := os.MkdirTemp("", "mcpgw-bench-pki")
	if err != nil {
		return err
	}
	defer os.RemoveAll(pkiDir)
	tlsAddr, err := freeAddr()
	if err != nil {
		return err
	}
	tlsServer, tlsClient, err := benchPKI(pkiDir, tlsAddr)
	if err != nil {
		return err
	}
	gw, addr, err := startGatewayProcess(tlsServer+buses, max(opts.Many, 256)+50, "warn", stderr)
	if err != nil {
		return err
	}
	defer gw.stop()

	var rep report
	rep.printf("# mcpgw benchmarks\n\n")
	rep.printf("Made by `%s` on %s, %d CPUs, %s; %s.\n\n", "make bench", time.Now().UTC().Format("2006-01-02"), runtime.NumCPU(), runtime.Version(), cpuModel())
	rep.printf("The gateway runs as its own process (`mcpgw run`); simulated devices (`mcpgw sim`'s code) answer on pseudo-terminal lines. The direct master is a plain RTU master on an identical twin line: it writes a request, reads the answer to its predicted length, and keeps t3.5 between frames as the spec asks. Every request reads 10 holding registers at a random address of a random unit, and every answer is checked against the device's contents. A paced line delivers each byte one character time (11 bits) after the previous one, one direction at a time.\n\n")

	echoAddr, stopEcho, err := startEcho(ctx)
	if err != nil {
		return err
	}
	defer stopEcho()

	// Latency: one client polling, a short pause after each answer.
	rep.printf("## Latency, one client polling (5 ms between polls)\n\n")
	rep.printf("Each poll is made three ways in turn: by the direct master on the twin line, through the gateway by a Modbus TCP client, and as a bare 12-byte TCP round trip to an echo server in another process. Taking them in turn lets all three see the same moments of the machine, whose cost of waking a process drifts over seconds. The TCP round trip is the least the gateway can add to a Modbus TCP transaction; the last column is what it adds beyond it.\n\n")
	rep.printf("| line | polls | direct p50 | p90 | p99 | max | gateway p50 | p90 | p99 | max | added p50 | added p99 | TCP round trip p50 | p99 | added p50 beyond TCP |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	type latRow struct {
		name               string
		direct, via        *loadtest.Result
		addedP50, addedP99 time.Duration
		tcpP50             time.Duration
	}
	var latRows []latRow
	runs := []struct {
		l     *benchLine
		name  string
		count int
		awake bool
	}{
		{lines[0], lines[0].name, 2000, false},
		{lines[1], lines[1].name, 150, false},
		{lines[2], lines[2].name, 500, false},
		{lines[0], lines[0].name + ", CPUs kept out of idle", 1000, true},
	}
	for _, run := range runs {
		l := run.l
		var stopSpin func()
		if run.awake {
			if stopSpin, err = startSpinners(ctx, runtime.NumCPU()); err != nil {
				return err
			}
		}
		cfg := loadtest.Config{Addr: addr, Requests: n(run.count), Units: l.units, Qty: 10, Think: 5 * time.Millisecond, Seed: 1}
		direct, via, echo, err := loadtest.RunSideBySide(ctx, l.master, l.gap, echoAddr, cfg)
		if stopSpin != nil {
			stopSpin()
		}
		if err != nil {
			return err
		}
		if err := sane(run.name+" direct", direct); err != nil {
			return err
		}
		if err := sane(run.name+" gateway", via); err != nil {
			return err
		}
		tcpP50 := loadtest.Percentile(echo, 50)
		r := latRow{run.name, direct, via, via.Percentile(50) - direct.Percentile(50), via.Percentile(99) - direct.Percentile(99), tcpP50}
		latRows = append(latRows, r)
		rep.printf("| %s | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", run.name, direct.OK,
			us(direct.Percentile(50)), us(direct.Percentile(90)), us(direct.Percentile(99)), us(direct.Percentile(100)),
			us(via.Percentile(50)), us(via.Percentile(90)), us(via.Percentile(99)), us(via.Percentile(100)),
			us(r.addedP50), us(r.addedP99), us(tcpP50), us(loadtest.Percentile(echo, 99)), us(r.addedP50-tcpP50))
	}
	rep.printf("\nThe last row repeats the first with every CPU kept busy by a spinning process at the lowest priority (SCHED_IDLE, `mcpgw-bench spin`), which gives way at once to anything else that wants to run. A CPU that has nothing to do goes idle (on a virtual machine the hypervisor halts it), and waking it again is part of every hop from one process to another; where the host has CPU to spare, the difference between the first and last rows at p50 is that cost, a property of the machine rather than of the gateway (on a host that is itself busy, a spinning virtual CPU gains little). The last row's tail says nothing about the gateway: the spinners themselves sometimes delay a wakeup by milliseconds, the direct master's as much as the gateway's. The targets below are judged on the first rows.\n")

	// Exceptions: as fast as normal answers.
	paced := lines[1]
	excCfg := loadtest.Config{Addr: addr, Clients: 1, Requests: n(60), Units: paced.units, Qty: 10, MinAddr: 9995, MaxAddr: 10100, Think: 5 * time.Millisecond, Seed: 2}
	exc := loadtest.Run(ctx, excCfg)
	normal := latRows[1].via
	rep.printf("\n## A device's exception, through the gateway (paced 19200)\n\n")
	rep.printf("| answer | count | p50 | p99 |\n|---|---|---|---|\n")
	rep.printf("| normal, 10 registers (25-byte answer) | %d | %s | %s |\n", len(normal.Latencies), us(normal.Percentile(50)), us(normal.Percentile(99)))
	rep.printf("| exception 02 (5-byte answer) | %d | %s | %s |\n", len(exc.ExcLatencies), us(loadtest.Percentile(exc.ExcLatencies, 50)), us(loadtest.Percentile(exc.ExcLatencies, 99)))
	rep.printf("\nAn exception answer is shorter on the wire, so it returns sooner: the gateway ends it at its fifth byte instead of waiting for a timeout.\n")

	// Throughput on the paced 19200 line.
	rep.printf("\n## Throughput, paced 19200 8N2 line\n\n")
	window := d(6 * time.Second)
	capCfg := loadtest.Config{Clients: 1, Duration: window, Units: paced.units, Qty: 10, Seed: 3}
	capacity := loadtest.RunRTU(ctx, paced.master, capCfg, paced.gap)
	if err := sane("capacity", capacity); err != nil {
		return err
	}
	if len(capacity.Errors) > 0 {
		fmt.Fprintf(stderr, "capacity: errors %v\n", capacity.Errors)
	}
	capRate := float64(capacity.OK) / capacity.Elapsed.Seconds()
	wire := time.Duration(8+25) * paced.char()
	rep.printf("One transaction is 8 + 25 bytes on the wire: %s, plus t3.5 (%s) between frames, so at most %.1f/s. A direct master sending back to back (the line's capacity for this mix) made **%.1f/s**. The gateway's context switches are the times its threads were switched onto a CPU (wakeups, and preemptions by other processes): a count that does not move with what a wakeup costs the machine, as its CPU time does.\n\n",
		ms(wire), ms(paced.gap), 1/(wire+paced.gap).Seconds(), capRate)
	rep.printf("| clients | transactions | per second | of capacity | p50 | p99 | wrong | gateway CPU per transaction | its context switches per transaction |\n|---|---|---|---|---|---|---|---|---|\n")
	var thr16 float64
	gwCPU := map[int]time.Duration{}
	for _, c := range []int{1, 16, 256} {
		cpu0, sw0 := gw.cpu(), gw.switches()
		r := loadtest.Run(ctx, loadtest.Config{Addr: addr, Clients: c, Duration: window, Units: paced.units, Qty: 10, Timeout: 30 * time.Second, Seed: 4})
		cpu, sw := gw.cpu()-cpu0, gw.switches()-sw0
		if err := sane(fmt.Sprintf("%d clients", c), r); err != nil {
			return err
		}
		rate := float64(r.OK) / r.Elapsed.Seconds()
		if c == 16 {
			thr16 = rate / capRate
		}
		n := max(1, r.Transactions)
		gwCPU[c] = cpu / time.Duration(n)
		rep.printf("| %d | %d | %.1f | %.1f %% | %s | %s | %d | %s | %.1f |\n", c, r.OK, rate, 100*rate/capRate,
			ms(r.Percentile(50)), ms(r.Percentile(99)), r.Wrong, us(gwCPU[c]), float64(sw)/float64(n))
	}
	floor, err := benchFloor(ctx, &rep, opts.Floor, paced, window)
	if err != nil {
		return err
	}

	// Many clients on one line.
	unp := lines[0]
	rep.printf("\n## %d clients at once on one line (unpaced)\n\n", opts.Many)
	rep.printf("Every client connects first; then all start together and read back to back for %s, each at starting addresses of its own (no two clients ever send the same read, which shared reads would answer with one transaction: the clients whose reads were shared would get more answers than the line gave them turns). Fewest / most is the spread of right answers between clients: the queue's fairness. Each client gets one turn a round, so the spread is at least the window's last round, which some clients finished and others did not.\n\n", d(20*time.Second))
	cpu0, rss0 := gw.cpu(), gw.rss()
	peak := rss0
	done := make(chan *loadtest.Result)
	go func() {
		done <- loadtest.Run(ctx, loadtest.Config{Addr: addr, Clients: opts.Many, Duration: d(20 * time.Second), Units: unp.units, Qty: 10, Timeout: 60 * time.Second, Seed: 5, Distinct: true})
	}()
	var many1 *loadtest.Result
	for many1 == nil {
		select {
		case many1 = <-done:
		case <-time.After(200 * time.Millisecond):
			peak = max(peak, gw.rss())
		}
	}
	cpu := gw.cpu() - cpu0
	if err := sane("many clients", many1); err != nil {
		return err
	}
	if len(many1.Errors) > 0 {
		fmt.Fprintf(stderr, "many clients: client errors %v\n", many1.Errors)
	}
	least, most := many1.Fairness()
	served := 0
	for _, k := range many1.PerClient {
		if k > 0 {
			served++
		}
	}
	fairness := float64(least) / float64(max(1, most))
	rep.printf("| clients served | transactions | per second | fewest / most per client | wrong answers | client errors | gateway RSS before / peak | gateway CPU per transaction |\n|---|---|---|---|---|---|---|---|\n")
	rep.printf("| %d of %d | %d | %.0f | %d / %d (%.2f) | %d | %d | %.1f / %.1f MiB | %s |\n", served, opts.Many, many1.OK,
		float64(many1.OK)/many1.Elapsed.Seconds(), least, most, fairness, many1.Wrong, errCount(many1),
		float64(rss0)/1024, float64(peak)/1024, us(cpu/time.Duration(max(1, many1.Transactions))))

	pace, err := benchPace(ctx, &rep, gw, addr, lines[1], lines[3], lines[4], d)
	if err != nil {
		return err
	}
	if err := benchTLS(ctx, &rep, addr, tlsAddr, tlsClient, lines[0], n(1000), d(5*time.Second)); err != nil {
		return err
	}
	faster, err := benchFaster(ctx, &rep, d, stderr)
	if err != nil {
		return err
	}
	if err := benchSparkplug(ctx, &rep, d, stderr); err != nil {
		return err
	}
	uplinkTargets, err := benchUplink(ctx, &rep, d, stderr)
	if err != nil {
		return err
	}
	statusTargets, err := benchStatusPage(ctx, &rep, stderr)
	if err != nil {
		return err
	}
	if err := benchWires(ctx, &rep, n, stderr); err != nil {
		return err
	}
	absent, err := benchAbsent(ctx, &rep, opts.Slave, n, d, stderr)
	if err != nil {
		return err
	}

	// Latency as an independent master and client see it.
	rep.printf("\n## Latency as libmodbus sees it\n\n")
	probe, cleanup, err := buildProbe(opts.Probe)
	if err != nil {
		rep.printf("Skipped: %v.\n", err)
	} else {
		defer cleanup()
		rep.printf("An independent implementation takes the same measurement: %s polls in turn as an RTU master on the twin line and as a Modbus TCP client through the gateway (testdata/interop/latency_probe.c), 5 ms between polls, every value checked.\n\n", libmodbusVersion())
		rep.printf("| line | polls | direct p50 | p90 | p99 | gateway p50 | p90 | p99 | added p50 | added p99 | wrong | failed |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n")
		for i, l := range lines[:3] {
			l.master.Close() // the probe opens the twin line itself
			ids := l.ids()
			host, port, _ := net.SplitHostPort(addr)
			args := append([]string{l.twinPath, strconv.Itoa(l.baud), host, port, strconv.Itoa(n([]int{1000, 150, 500}[i])), "5000"}, ids...)
			out, err := exec.CommandContext(ctx, probe, args...).Output()
			if err != nil {
				return fmt.Errorf("latency probe on %s: %w", l.name, err)
			}
			d, g, err := parseProbe(string(out))
			if err != nil {
				return fmt.Errorf("latency probe on %s: %w", l.name, err)
			}
			if w := d["wrong"] + g["wrong"]; w > 0 {
				return fmt.Errorf("latency probe on %s: %.0f wrong answers:\n%s", l.name, w, out)
			}
			rep.printf("| %s | %.0f | %.0f µs | %.0f µs | %.0f µs | %.0f µs | %.0f µs | %.0f µs | %.0f µs | %.0f µs | %.0f | %.0f |\n", l.name, d["ok"],
				d["p50"], d["p90"], d["p99"], g["p50"], g["p90"], g["p99"], g["p50"]-d["p50"], g["p99"]-d["p99"],
				d["wrong"]+g["wrong"], d["failed"]+g["failed"])
		}
	}

	// Targets.
	rep.printf("\n## Targets\n\n| target | measured | met |\n|---|---|---|\n")
	check := func(name, got string, ok bool) {
		mark := "yes"
		if !ok {
			mark = "**no**"
		}
		rep.printf("| %s | %s | %s |\n", name, got, mark)
	}
	u := latRows[0]
	check("unpaced: gateway adds at most 100 µs at p50", us(u.addedP50), u.addedP50 <= 100*time.Microsecond)
	check("unpaced: gateway adds at most 300 µs at p99", us(u.addedP99), u.addedP99 <= 300*time.Microsecond)
	for _, r := range latRows[1:3] {
		ratio := float64(r.via.Percentile(50))/float64(r.direct.Percentile(50)) - 1
		check(r.name+": latency within 2 % of a direct master's (p50)", fmt.Sprintf("%+.2f %%", 100*ratio), ratio <= 0.02)
	}
	a := latRows[3]
	check("(for reference, not the target's measure) unpaced with CPUs kept out of idle: adds at most 100 µs at p50", us(a.addedP50), a.addedP50 <= 100*time.Microsecond)
	check("16 clients: at least 97 % of the line's capacity", fmt.Sprintf("%.1f %%", 100*thr16), thr16 >= 0.97)
	cpuGot := fmt.Sprintf("%s / %s", us(gwCPU[1]), us(gwCPU[16]))
	if floor != nil {
		cpuGot += fmt.Sprintf(" (the floor relay: %s / %s)", us(floor[1]), us(floor[16]))
	}
	check("paced 19200: gateway CPU per transaction at most 300 µs with 1 and with 16 clients", cpuGot, max(gwCPU[1], gwCPU[16]) <= 300*time.Microsecond)
	excP50, normP50 := loadtest.Percentile(exc.ExcLatencies, 50), normal.Percentile(50)
	check("an exception returns as fast as a normal answer (p50)", fmt.Sprintf("%s vs %s", us(excP50), us(normP50)), len(exc.ExcLatencies) > 0 && excP50 <= normP50)
	check(fmt.Sprintf("%d clients: all served", opts.Many), fmt.Sprintf("%d", served), served == opts.Many)
	check(fmt.Sprintf("%d clients: fewest/most at least 0.8", opts.Many), fmt.Sprintf("%.2f", fairness), fairness >= 0.8)
	check("zero wrong answers", fmt.Sprintf("%d", many1.Wrong), many1.Wrong == 0)
	check("peak memory under 64 MB", fmt.Sprintf("%.1f MiB", float64(peak)/1024), peak < 64*1000)
	for _, t := range append(append(append(append(pace, faster...), uplinkTargets...), statusTargets...), absent...) {
		check(t.name, t.got, t.ok)
	}

	fmt.Fprint(stdout, rep.String())
	if opts.Out != "" {
		if err := os.WriteFile(opts.Out, []byte(rep.String()), 0o644); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "\nwritten to %s\n", opts.Out)
	}
	return nil
}

// startEcho starts a TCP echo server in a process of its own (mcpgw
// tcpecho) and returns its address and a function that stops it.
func startEcho(ctx context.Context) (string, func(), error) {
	self, err := os.Executable()
	if err != nil {
		return "", nil, err
	}
	cmd := exec.CommandContext(ctx, self, "tcpecho")
	out, err := cmd.StdoutPipe()
	if err != nil {
		return "", nil, err
	}
	if err := cmd.Start(); err != nil {
		return "", nil, err
	}
	stop := func() { cmd.Process.Kill(); cmd.Wait() }
	addr, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		stop()
		return "", nil, fmt.Errorf("tcpecho: %w", err)
	}
	return strings.TrimSpace(addr), stop, nil
}

// TCPEcho is the bench's helper (mcpgw-bench tcpecho): a TCP echo server.
func TCPEcho(stdout io.Writer) error {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, l.Addr())
	for {
		c, err := l.Accept()
		if err != nil {
			return err
		}
		go func() { io.Copy(c, c); c.Close() }()
	}
}

// buildProbe compiles the libmodbus latency probe into a temporary
// directory; it returns the binary and a function that removes it.
func buildProbe(src string) (string, func(), error) {
	flags, err := exec.Command("pkg-config", "--cflags", "--libs", "libmodbus").Output()
	if err != nil {
		return "", nil, fmt.Errorf("pkg-config libmodbus: %v (apt-get install pkg-config libmodbus-dev)", err)
	}
	return buildC(src, strings.Fields(string(flags))...)
}

// buildC compiles C source src with cc and flags into a temporary
// directory; it returns the binary and a function that removes it.
func buildC(src string, flags ...string) (string, func(), error) {
	if src == "" {
		return "", nil, errors.New("no source given")
	}
	if _, err := os.Stat(src); err != nil {
		return "", nil, fmt.Errorf("no source (run make bench from the repository): %w", err)
	}
	dir, err := os.MkdirTemp("", "mcpgw-bench")
	if err != nil {
		return "", nil, err
	}
	bin := filepath.Join(dir, strings.TrimSuffix(filepath.Base(src), ".c"))
	args := append([]string{"-O2", "-o", bin, src}, flags...)
	if out, err := exec.Command("cc", args...).CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return "", nil, fmt.Errorf("cc %s: %v\n%s", src, err, out)
	}
	return bin, func() { os.RemoveAll(dir) }, nil
}

// parseProbe reads the probe's two lines of name=value fields.
func parseProbe(out string) (direct, gateway map[string]float64, err error) {
	sides := map[string]map[string]float64{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		m := map[string]float64{}
		for _, kv := range f[1:] {
			k, v, ok := strings.Cut(kv, "=")
			x, err := strconv.ParseFloat(v, 64)
			if !ok || err != nil {
				return nil, nil, fmt.Errorf("unexpected probe output %q", line)
			}
			m[k] = x
		}
		sides[f[0]] = m
	}
	direct, gateway = sides["direct"], sides["gateway"]
	if direct == nil || gateway == nil || direct["ok"] == 0 || gateway["ok"] == 0 {
		return nil, nil, fmt.Errorf("no answers in probe output %q", out)
	}
	return direct, gateway, nil
}

func libmodbusVersion() string {
	v, err := exec.Command("pkg-config", "--modversion", "libmodbus").Output()
	if err != nil {
		return "version unknown"
	}
	return "libmodbus " + strings.TrimSpace(string(v))
}

// startSpinners starts n mcpgw-bench spin processes and returns a function that
// stops them.
func startSpinners(ctx context.Context, n int) (func(), error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	var cmds []*exec.Cmd
	stop := func() {
		for _, c := range cmds {
			c.Process.Kill()
			c.Wait()
		}
	}
	for range n {
		c := exec.CommandContext(ctx, self, "spin")
		c.Stderr = os.Stderr
		if err := c.Start(); err != nil {
			stop()
			return nil, err
		}
		cmds = append(cmds, c)
	}
	time.Sleep(100 * time.Millisecond) // let them take their policy
	return stop, nil
}

// Spin is the bench's helper (mcpgw-bench spin): it keeps one CPU busy at the lowest priority
// there is (SCHED_IDLE), so the CPU never enters its idle state yet gives
// way at once to anything else that wants to run.
func Spin() error {
	runtime.LockOSThread()
	if err := unix.SchedSetAttr(0, &unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: unix.SCHED_IDLE}, 0); err != nil {
		return fmt.Errorf("spin: SCHED_IDLE: %w", err)
	}
	for {
	}
}

type report struct{ strings.Builder }

func (r *report) printf(format string, a ...any) { fmt.Fprintf(&r.Builder, format, a...) }

func us(d time.Duration) string { return fmt.Sprintf("%.0f µs", float64(d)/float64(time.Microsecond)) }
func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond)) }

func errCount(r *loadtest.Result) int {
	n := 0
	for _, v := range r.Errors {
		n += v
	}
	return n
}

// sane fails a run that gave wrong answers or none at all.
func sane(what string, r *loadtest.Result) error {
	if r.Wrong > 0 {
		return fmt.Errorf("%s: %d WRONG ANSWERS, first: %s", what, r.Wrong, r.FirstWrong)
	}
	if r.Transactions == 0 {
		return fmt.Errorf("%s: no answers; errors %v", what, r.Errors)
	}
	return nil
}

func cpuModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "model name"); ok {
			return strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
		}
	}
	return runtime.GOARCH
}

// gatewayProcess is mcpgw run in a process of its own.
type gatewayProcess struct {
	cmd *exec.Cmd
	dir string
}

// benchLines are the simulated lines the bench measures the gateway on.
// Its paced 19200 line is lines[1]; the pace rigs are lines[3] (the
// fault mix) and lines[4] (a dead unit beside a live one).
func benchLines() []*benchLine {
	return []*benchLine{
		{name: "unpaced pty", baud: 19200, units: []byte{1, 2, 3}},
		{name: "paced 19200 8N2", baud: 19200, paced: true, units: []byte{11, 12, 13}},
		{name: "paced 115200 8N2", baud: 115200, paced: true, units: []byte{21, 22, 23}},
		// The pace rigs: the fault mix (drop 1 in 29, corrupt 1 in 11,
		// 1 in 37 late by 450 ms) and its healthy twin, with a dead unit
		// configured beside a live one; timeout 300 ms, one retry.
		{name: "faulty pty", baud: 115200, units: []byte{41}, timeout: 300 * time.Millisecond,
			faults: sim.Faults{Drop: 1.0 / 29, Corrupt: 1.0 / 11, CRCOnly: true, Late: 1.0 / 37, LateBy: 450 * time.Millisecond, Seed: 9}},
		// Dead units: 52 for the dead-unit row, 53 for the hostile one
		// (dead, and not yet offline, when that row starts).
		{name: "healthy pty, a dead unit", baud: 115200, units: []byte{51}, dead: []byte{52, 53}, timeout: 300 * time.Millisecond},
	}
}

// busesFor returns the gateway's [[bus]] tables for lines, opened.
func busesFor(lines []*benchLine) string {
	var buses strings.Builder
	for i, l := range lines {
		ids := l.ids()
		for _, u := range l.dead {
			ids = append(ids, strconv.Itoa(int(u)))
		}
		bus := "timeout = \"500ms\"\n"
		if l.timeout > 0 {
			bus = fmt.Sprintf("timeout = %q\nretries = 1\n", l.timeout)
		}
		fmt.Fprintf(&buses, "[[bus]]\nname = \"line%d\"\nport = %q\nbaud = %d\nparity = \"N\"\nstop_bits = 2\n%sunits = [\"%s\"]\n",
			i, l.gwPath, l.baud, bus, strings.Join(ids, `", "`))
	}
	return buses.String()
}

// benchPaceAlone runs the pace rows (benchPace) on their own lines and
// gateway: -only pace. Its gateway is fresh: the hostile row's warm-up
// (see benchHostile) is where its heap grows to its working size.
func benchPaceAlone(ctx context.Context, rep *report, d func(time.Duration) time.Duration, stderr io.Writer) ([]target, error) {
	all := benchLines()
	lines := []*benchLine{all[1], all[3], all[4]}
	for _, l := range lines {
		if err := l.open(ctx); err != nil {
			return nil, err
		}
		defer l.close()
	}
	gw, addr, err := startGatewayProcess(busesFor(lines), 256, "warn", stderr)
	if err != nil {
		return nil, err
	}
	defer gw.stop()
	return benchPace(ctx, rep, gw, addr, lines[0], lines[1], lines[2], d)
}

// startGatewayProcess runs this binary as `mcpgw run` on a loopback
// address of its own, with the given [[bus]] tables and log level, and
// returns once it listens and its lines have had time to open.
func startGatewayProcess(buses string, maxConns int, level string, stderr io.Writer) (*gatewayProcess, string, error) {
	return startGatewayWith("", buses, maxConns, level, stderr)
}

// startGatewayWith is startGatewayProcess with more [server] keys.
func startGatewayWith(server, buses string, maxConns int, level string, stderr io.Writer) (*gatewayProcess, string, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, "", err
	}
	dir, err := os.MkdirTemp("", "mcpgw-gateway")
	if err != nil {
		return nil, "", err
	}
	// Every client of the bench comes from loopback: no cap per address.
	cfg := fmt.Sprintf("[server]\nlisten = %q\nmax_conns = %d\nmax_conns_per_ip = 0\n%s[log]\nlevel = %q\n%s", addr, maxConns, server, level, buses)
	path := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		os.RemoveAll(dir)
		return nil, "", err
	}
	args := []string{"run", "-config", path}
	if prof := os.Getenv("MCPGW_BENCH_CPUPROFILE"); prof != "" {
		args = append(args, "-cpuprofile", prof)
	}
	cmd := exec.Command(Gateway, args...)
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, "", err
	}
	g := &gatewayProcess{cmd: cmd, dir: dir}
	if err := waitListening(addr, 5*time.Second); err != nil {
		g.stop()
		return nil, "", err
	}
	time.Sleep(300 * time.Millisecond) // let every line open
	return g, addr, nil
}

func (g *gatewayProcess) stop() {
	g.cmd.Process.Signal(os.Interrupt)
	g.cmd.Wait()
	os.RemoveAll(g.dir)
}

func (g *gatewayProcess) rss() int { return rssKB(g.cmd.Process.Pid) }

// cpu returns the CPU time all the process's threads have used so far,
// from /proc/PID/task/*/schedstat (nanoseconds; /proc/PID/stat counts in
// 10 ms ticks, too coarse for a few hundred transactions).
func (g *gatewayProcess) cpu() time.Duration { return cpuOf(g.cmd.Process.Pid) }

// cpuOf is process pid's CPU time so far (see gatewayProcess.cpu).
func cpuOf(pid int) time.Duration {
	cpu, _ := schedOf(pid)
	return cpu
}

// switches returns how many times the process's threads have been
// switched onto a CPU so far: its context switches, each a wakeup or a
// preemption. Unlike CPU time, the count does not move with what a
// wakeup costs the machine.
func (g *gatewayProcess) switches() int64 {
	_, n := schedOf(g.cmd.Process.Pid)
	return n
}

// schedOf sums /proc/PID/task/*/schedstat over process pid's threads:
// the CPU time they used and how many times they were switched onto a
// CPU.
func schedOf(pid int) (cpu time.Duration, runs int64) {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue
		}
		if f := strings.Fields(string(b)); len(f) == 3 {
			ns, _ := strconv.ParseInt(f[0], 10, 64)
			n, _ := strconv.ParseInt(f[2], 10, 64)
			cpu, runs = cpu+time.Duration(ns), runs+n
		}
	}
	return cpu, runs
}
