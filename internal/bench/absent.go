//go:build linux

package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mcpgw/mcpgw/internal/loadtest"
	"github.com/mcpgw/mcpgw/pkg/wire/serialport"
)

// The absent-devices rows: a libmodbus RTU slave as the one device
// present (unit 1), behind an unpaced pseudo-terminal line at 115200
// (8N2), and a gateway started fresh for each row (a cold start) with
// more units configured, timeout 300 ms, one retry, and the offline rule,
// the silence budget and discovery at their defaults.

// libmodbusPattern is what rtu_slave.c's holding registers hold.
func libmodbusPattern(unit byte, addr int) uint16 { return uint16(addr*7 + int(unit)) }

// absentRig runs the slave and a gateway for one row.
type absentRig struct {
	slave   string // the built rtu_slave
	stderr  io.Writer
	line    *serialport.PacedLine
	dev     *exec.Cmd
	gw      *gatewayProcess
	addr    string // the gateway's Modbus TCP listener
	metrics string // its metrics listener
}

// startAbsentRig starts the slave (with its fault arguments, if any) and a
// gateway whose line serves units.
func startAbsentRig(ctx context.Context, slave string, units string, stderr io.Writer, faults ...string) (*absentRig, error) {
	line, err := serialport.NewPacedLine(0) // unpaced: bytes as fast as the ptys take them
	if err != nil {
		return nil, err
	}
	r := &absentRig{slave: slave, stderr: stderr, line: line}
	args := append([]string{line.DevicePath, "115200", "N", "1"}, faults...)
	if err := r.start(exec.CommandContext(ctx, slave, args...), "rtu_slave", 0, units); err != nil {
		return nil, err
	}
	return r, nil
}

// start runs dev, the rig's device, until it prints "ready" (and settle
// more), then a gateway whose line serves units; on an error it stops
// what it started.
func (r *absentRig) start(dev *exec.Cmd, name string, settle time.Duration, units string) error {
	r.dev = dev
	out, err := r.dev.StdoutPipe()
	if err != nil {
		r.stop()
		return err
	}
	r.dev.Stderr = r.stderr
	if err := r.dev.Start(); err != nil {
		r.stop()
		return err
	}
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if sc.Text() == "ready" {
				ready <- true
			}
		}
	}()
	select {
	case <-ready:
	case <-time.After(10 * time.Second):
		r.stop()
		return fmt.Errorf("%s did not start", name)
	}
	time.Sleep(settle)
	if r.metrics, err = freeAddr(); err != nil {
		r.stop()
		return err
	}
	buses := fmt.Sprintf("[metrics]\nlisten = %q\n[[bus]]\nname = \"rig\"\nport = %q\nbaud = 115200\nparity = \"N\"\nstop_bits = 2\ntimeout = \"300ms\"\nretries = 1\nunits = [%s]\n",
		r.metrics, r.line.Path, units)
	if r.gw, r.addr, err = startGatewayProcess(buses, 1000, "warn", r.stderr); err != nil {
		r.stop()
		return err
	}
	return nil
}

func (r *absentRig) stop() {
	if r.gw != nil {
		r.gw.stop()
	}
	if r.dev != nil && r.dev.Process != nil {
		r.dev.Process.Kill()
		r.dev.Wait()
	}
	r.line.Close()
}

// poll runs n checking clients of unit 1 for d.
func (r *absentRig) poll(ctx context.Context, n int, d time.Duration, seed uint64) *loadtest.Result {
	return loadtest.Run(ctx, loadtest.Config{Addr: r.addr, Clients: n, Duration: d, Units: []byte{1}, Qty: 10,
		Timeout: 30 * time.Second, Seed: seed, Pattern: libmodbusPattern})
}

// stalls counts r's answers that waited through a silence: longer than
// the line's timeout (300 ms), which no answer of the present unit takes
// (about 2 ms on this rig) unless it queued behind one.
func stalls(r *loadtest.Result) int {
	n := 0
	for _, l := range r.Latencies {
		if l > 300*time.Millisecond {
			n++
		}
	}
	return n
}

// scan cycles one client through units, one request at a time with a 2 s
// timeout as a SCADA scan does, until ctx ends; it returns how many it
// asked.
func (r *absentRig) scan(ctx context.Context, units []byte) int {
	c := loadtest.NewClient(r.addr, 2*time.Second, 1)
	defer c.Close()
	n := 0
	for i := 0; ctx.Err() == nil; i++ {
		c.Read(ctx, units[i%len(units)], 0, 1)
		n++
	}
	return n
}

func rate(r *loadtest.Result) float64 { return float64(r.OK) / r.Elapsed.Seconds() }

func unitRange(from, to int) []byte {
	var us []byte
	for u := from; u <= to; u++ {
		us = append(us, byte(u))
	}
	return us
}

// benchAbsent measures what absent devices cost the line's present one.
func benchAbsent(ctx context.Context, rep *report, slaveSrc string, n func(int) int, d func(time.Duration) time.Duration, stderr io.Writer) ([]target, error) {
	slave, clean, err := buildProbe(slaveSrc)
	if err != nil {
		rep.printf("\n## Absent devices\n\nNot run: %v\n", err)
		return nil, nil
	}
	defer clean()
	rep.printf("\n## Absent devices\n\nA %s RTU slave (testdata/interop/rtu_slave.c) is the one device present, unit 1, behind an unpaced pseudo-terminal line at 115200; the gateway, started afresh for each row, has more units configured on the line (timeout 300 ms, one retry; offline rule, silence budget and discovery at their defaults). Every value read is checked against the device's registers.\n\n", libmodbusVersion())
	var targets []target
	nothingWrong := func(rs ...*loadtest.Result) int {
		f := 0
		for _, r := range rs {
			f += errCount(r) + r.Wrong + len(r.ExcLatencies)
		}
		return f
	}

	// A SCADA scan over nine absent units beside a good client.
	{
		r, err := startAbsentRig(ctx, slave, `"1-10"`, stderr)
		if err != nil {
			return nil, err
		}
		alone := r.poll(ctx, 1, d(10*time.Second), 41)
		sctx, cancel := context.WithCancel(ctx)
		var scans atomic.Int64
		var wg sync.WaitGroup
		wg.Go(func() { scans.Add(int64(r.scan(sctx, unitRange(2, 10)))) })
		first := r.poll(ctx, 1, d(5*time.Second), 42)
		cancel()
		wg.Wait()
		// The 55 s after: the scanner in slices, the good client alone
		// between them, so that the line's drift over a minute (this
		// rig's pseudo-terminals move by several per cent) is in both.
		// The budget's silences come one in 12 s (600 ms at 5 %), in
		// both (discovery's probes of units never heard take it while
		// the scanner is away): slices of about that length each hold
		// about one; shorter ones would catch or miss it whole.
		solo, rest := inTurn(ctx, 5, func(i int) *loadtest.Result { return r.poll(ctx, 1, d(11*time.Second), uint64(43+i)) },
			func(sctx context.Context) { scans.Add(int64(r.scan(sctx, unitRange(2, 10)))) })
		r.stop()
		f1, f2 := rate(first)/rate(alone), rate(&rest)/rate(&solo)
		failed := nothingWrong(alone, first, &solo, &rest)
		rep.printf("A good client polls unit 1 back to back, alone for %s from the gateway's start, then beside a scanner cycling through the absent units 2-10 (one request at a time, 2 s timeout) for %s; then for %s more the scanner goes on in 5 slices of %s, with the good client alone for as long between them (%d requests scanned).\n\n",
			d(10*time.Second), d(5*time.Second), d(55*time.Second), d(11*time.Second), scans.Load())
		rep.printf("| good client | answers per second | of alone |\n|---|---|---|\n| alone from the start | %.1f | |\n| the scanner's first %s | %.1f | %.0f %% |\n| alone, in turn | %.1f | |\n| the scanner's %s after, in turn | %.1f | %.0f %% |\n\n",
			rate(alone), d(5*time.Second), rate(first), 100*f1, rate(&solo), d(55*time.Second), rate(&rest), 100*f2)
		rep.printf("The good client's answers that waited through a silence (a request to an absent unit: one attempt listening 600 ms): %d in the scanner's first %s, %d beside it in turn, %d alone in turn (discovery's probes of the units not yet heard).\n", stalls(first), d(5*time.Second), stalls(&rest), stalls(&solo))
		targets = append(targets, target{"scan over 9 absent units from a cold start: at least 80 % in its first 5 s and 95 % over the next 55 s, none failed or wrong",
			fmt.Sprintf("%.0f %% and %.0f %%, %d failed or wrong", 100*f1, 100*f2, failed), f1 >= 0.8 && f2 >= 0.95 && failed == 0})
	}

	// 100 absent units: units 1-247 configured, a scanner through 2-101.
	{
		r, err := startAbsentRig(ctx, slave, `"1-247"`, stderr)
		if err != nil {
			return nil, err
		}
		alone := r.poll(ctx, 1, d(5*time.Second), 44)
		sctx, cancel := context.WithCancel(ctx)
		var wg sync.WaitGroup
		wg.Go(func() { r.scan(sctx, unitRange(2, 101)) })
		warm := r.poll(ctx, 1, d(60*time.Second), 45)
		cancel()
		wg.Wait()
		// After the first minute: the scanner in slices, the good client
		// alone between them (the line's drift in both; slices of one
		// budget period, 12 s, as above).
		solo, rest := inTurn(ctx, 5, func(i int) *loadtest.Result { return r.poll(ctx, 1, d(12*time.Second), uint64(46+i)) },
			func(sctx context.Context) { r.scan(sctx, unitRange(2, 101)) })
		r.stop()
		f0, f := rate(warm)/rate(alone), rate(&rest)/rate(&solo)
		share := float64(stalls(&rest)) * 0.6 / rest.Elapsed.Seconds()
		failed := nothingWrong(alone, warm, &solo, &rest)
		rep.printf("\nUnits 1-247 configured, a scanner cycling through 100 absent ones (2-101) beside the good client: %.0f %% of its rate alone (%s from the start) in the first %s; after it, in 5 slices of %s with the good client alone for as long between them, %.0f %%; the good client waited through %d silences of 600 ms beside the scanner (%.1f %% of that time) and %d alone (discovery's probes of the units not yet heard take the budget while the scanner is away).\n",
			100*f0, d(5*time.Second), d(60*time.Second), d(12*time.Second), 100*f, stalls(&rest), 100*share, stalls(&solo))
		targets = append(targets, target{"100 absent units scanned: at least 95 % after the first minute, none failed or wrong",
			fmt.Sprintf("%.0f %% (first minute %.0f %%), silences %.1f %% of the line, %d failed or wrong", 100*f, 100*f0, 100*share, failed), f >= 0.95 && failed == 0})
	}

	// One dead unit polled as fast as it is answered, from a cold start.
	{
		r, err := startAbsentRig(ctx, slave, `"1-2"`, stderr)
		if err != nil {
			return nil, err
		}
		dctx, cancel := context.WithCancel(ctx)
		var wg sync.WaitGroup
		wg.Go(func() {
			c := loadtest.NewClient(r.addr, 10*time.Second, 1)
			defer c.Close()
			for dctx.Err() == nil {
				c.Read(dctx, 2, 0, 10)
			}
		})
		beside := r.poll(ctx, 4, d(8*time.Second), 47)
		cancel()
		wg.Wait()
		alone := r.poll(ctx, 4, d(8*time.Second), 48)
		r.stop()
		f := rate(beside) / rate(alone)
		failed := nothingWrong(beside, alone)
		rep.printf("\n4 clients poll unit 1 from the gateway's start while one more polls the dead unit 2 as fast as it is answered, for %s; then the 4 alone: %.1f and %.1f answers a second (%.0f %%).\n", d(8*time.Second), rate(beside), rate(alone), 100*f)
		targets = append(targets, target{"a dead unit polled from a cold start: live units keep at least 90 %, none failed or wrong",
			fmt.Sprintf("%.0f %%, %d failed or wrong", 100*f, failed), f >= 0.9 && failed == 0})
	}

	// 20 hostile clients, from a cold start and then in turn. The cold
	// figure's baseline is the good client alone on a gateway started
	// the same way just before (discovery's probes in both).
	{
		r, err := startAbsentRig(ctx, slave, `"1-10"`, stderr)
		if err != nil {
			return nil, err
		}
		aloneCold := r.poll(ctx, 1, d(8*time.Second), 50)
		r.stop()
		if r, err = startAbsentRig(ctx, slave, `"1-10"`, stderr); err != nil {
			return nil, err
		}
		hctx, cancel := context.WithCancel(ctx)
		var wg sync.WaitGroup
		var sent atomic.Int64
		wg.Go(func() { sent.Add(int64(loadtest.Hostile(hctx, r.addr, 20, unitRange(2, 10), 49))) })
		rss0 := r.gw.rss()
		cold := r.poll(ctx, 1, d(8*time.Second), 50)
		cancel()
		wg.Wait()
		rssWarm := r.gw.rss()
		// Slices of 12 s, the budget's period (one silence of 600 ms in
		// 12 s at 5 %): the hostile clients' requests to the absent
		// units are its only demand, so each of their slices takes one
		// silence whatever its length, since the budget rests while they
		// are away. Slices of 3 s took one in every other slice: 10 % of
		// their time, twice what the same clients cost when they never
		// stop.
		alone, amid := inTurn(ctx, 3, func(i int) *loadtest.Result { return r.poll(ctx, 1, d(12*time.Second), uint64(51+i)) },
			func(hctx context.Context) { sent.Add(int64(loadtest.Hostile(hctx, r.addr, 20, unitRange(2, 10), 60))) })
		rss1 := r.gw.rss()
		r.stop()
		fc, f := rate(cold)/rate(aloneCold), rate(&amid)/rate(&alone)
		failed := nothingWrong(aloneCold, cold, &alone, &amid)
		rep.printf("\nOne good client among 20 hostile ones (function codes 0 and 128-255, wrong lengths, 2000 registers, requests at random addresses to the absent units 2-10, broken headers; %d requests): %.0f %% of its rate alone from a gateway's start (%s each, on two gateways started in turn), %.0f %% in turn (3 slices of %s each; it waited through %d silences of 600 ms then, %d alone). Gateway RSS %.1f MiB at the start, %.1f after the cold run, %.1f at the end.\n",
			sent.Load(), 100*fc, d(8*time.Second), 100*f, d(12*time.Second), stalls(&amid), stalls(&alone), mib(rss0), mib(rssWarm), mib(rss1))
		targets = append(targets, target{"20 hostile clients: the good client keeps at least 80 % (cold and in turn), none failed or wrong, memory flat",
			fmt.Sprintf("%.0f %% cold, %.0f %% in turn, %d failed or wrong, RSS %+.1f MiB in turn", 100*fc, 100*f, failed, mib(rss1-rssWarm)),
			fc >= 0.8 && f >= 0.8 && failed == 0 && rss1-rssWarm < 2*1024})
	}

	// The fault mix against the libmodbus device.
	{
		r, err := startAbsentRig(ctx, slave, `1`, stderr, "29", "11", "37", "450", "9")
		if err != nil {
			return nil, err
		}
		mix := r.poll(ctx, 16, d(10*time.Second), 61)
		r.stop()
		rep.printf("\nThe fault mix: the device drops 1 answer in 29, corrupts the CRC of 1 read in 11, answers 1 in 37 late by 450 ms; 16 checking clients for %s from the gateway's start: %d good answers, %d 0x0B, %d wrong.\n", d(10*time.Second), mix.OK, mix.Exceptions[0x0B], mix.Wrong)
		want := int(360 * float64(d(10*time.Second)) / float64(10*time.Second))
		targets = append(targets, target{"fault mix (libmodbus device): at least 360 good answers in 10 s, zero wrong",
			fmt.Sprintf("%d good (of %d wanted), %d wrong", mix.OK, want, mix.Wrong), mix.OK >= want && mix.Wrong == 0})
	}
	scans, err := benchScans(ctx, rep, filepath.Join(filepath.Dir(slaveSrc), "pymodbus_server.py"), n, d, stderr)
	return append(targets, scans...), err
}

// pymodbusPattern is what testdata/interop/pymodbus_server.py's holding
// registers hold.
func pymodbusPattern(unit byte, addr int) uint16 { return uint16(int(unit)*100 + addr*11) }

// startPymodbusRig is startAbsentRig with pymodbus's RTU server answering
// units present (1-30) instead of libmodbus's slave.
func startPymodbusRig(ctx context.Context, server, units string, stderr io.Writer) (*absentRig, error) {
	line, err := serialport.NewPacedLine(0)
	if err != nil {
		return nil, err
	}
	r := &absentRig{stderr: stderr, line: line}
	args := []string{server, line.DevicePath, "115200", "N"}
	for u := 1; u <= 30; u++ {
		args = append(args, strconv.Itoa(u))
	}
	// Half a second more, to the server's first read.
	if err := r.start(exec.CommandContext(ctx, "/usr/bin/python3", args...), "pymodbus_server.py", 500*time.Millisecond, units); err != nil {
		return nil, err
	}
	return r, nil
}

// scanOnce asks each of units once (one register, 2 s timeout) and
// returns the units that answered with their value, and how long it
// took.
func (r *absentRig) scanOnce(ctx context.Context, units []byte, pattern func(byte, int) uint16) (answered []byte, wrong int, took time.Duration) {
	c := loadtest.NewClient(r.addr, 2*time.Second, 1)
	defer c.Close()
	start := time.Now()
	for _, u := range units {
		p, _, err := c.Read(ctx, u, 0, 1)
		if err != nil || len(p) != 4 || p[0] != 0x03 {
			continue
		}
		if v := uint16(p[2])<<8 | uint16(p[3]); v != pattern(u, 0) {
			wrong++
			continue
		}
		answered = append(answered, u)
	}
	return answered, wrong, time.Since(start)
}

// benchScans measures SCADA scans over present and absent units, against
// pymodbus's RTU server (server, pymodbus_server.py) answering units 1-30.
func benchScans(ctx context.Context, rep *report, server string, n func(int) int, d func(time.Duration) time.Duration, stderr io.Writer) ([]target, error) {
	if _, err := exec.LookPath("/usr/bin/python3"); err != nil || exec.Command("/usr/bin/python3", "-c", "import pymodbus").Run() != nil {
		rep.printf("\nThe scans over present and absent units were not run: pymodbus (python3-pymodbus) is not installed.\n")
		return nil, nil
	}
	var targets []target
	// 30 present and 10 absent, from a cold start; then the scan without
	// the absent ones, as long.
	{
		r, err := startPymodbusRig(ctx, server, `"1-40"`, stderr)
		if err != nil {
			return nil, err
		}
		// scan cycles through units from now for span, and returns when
		// each unit first answered (from start) and how many answers came
		// after from.
		scan := func(units []byte, start time.Time, from, span time.Duration) (first map[byte]time.Duration, after, wrong int) {
			c := loadtest.NewClient(r.addr, 2*time.Second, 1)
			defer c.Close()
			first = map[byte]time.Duration{}
			for i := 0; time.Since(start) < span && ctx.Err() == nil; i++ {
				u := units[i%len(units)]
				p, _, err := c.Read(ctx, u, 0, 1)
				if err != nil || len(p) != 4 || p[0] != 0x03 {
					continue
				}
				if v := uint16(p[2])<<8 | uint16(p[3]); v != pymodbusPattern(u, 0) {
					wrong++
					continue
				}
				if _, ok := first[u]; !ok {
					first[u] = time.Since(start)
				}
				if time.Since(start) >= from {
					after++
				}
			}
			return first, after, wrong
		}
		start := time.Now()
		first, second, wrong := scan(unitRange(1, 40), start, d(10*time.Second), d(20*time.Second))
		var allBy time.Duration
		for _, t := range first {
			allBy = max(allBy, t)
		}
		_, base, w := scan(unitRange(1, 30), time.Now(), 0, d(10*time.Second))
		wrong += w
		r.stop()
		ratio := float64(second) / float64(max(1, base))
		rep.printf("\npymodbus's RTU server answers units 1-30; units 1-40 configured. From the gateway's start a SCADA scan cycles through 1-40 (one register each, 2 s timeout): %d of the 30 present units had answered, the last %s after the start; in the scan's second %s, %d answers from them, %.0f %% of what a scan over 1-30 alone gets in as long (%d).\n",
			len(first), allBy.Round(time.Millisecond), d(10*time.Second), second, 100*ratio, base)
		targets = append(targets, target{"scan over 30 present and 10 absent units from a cold start: all 30 answer within 5 s; the second 10 s at least 80 % of a scan without the absent ones, none wrong",
			fmt.Sprintf("all within %s, %.0f %%, %d wrong", allBy.Round(time.Millisecond), 100*ratio, wrong), len(first) == 30 && allBy <= 5*time.Second && ratio >= 0.8 && wrong == 0})
	}
	// A commissioning scan over 1-247, twice (at a smaller scale, over
	// fewer absent units).
	{
		last := 30 + n(217)
		r, err := startPymodbusRig(ctx, server, fmt.Sprintf(`"1-%d"`, last), stderr)
		if err != nil {
			return nil, err
		}
		first, w1, took1 := r.scanOnce(ctx, unitRange(1, last), pymodbusPattern)
		again, w2, took2 := r.scanOnce(ctx, unitRange(1, last), pymodbusPattern)
		r.stop()
		exact := func(got []byte) bool { return fmt.Sprint(got) == fmt.Sprint(unitRange(1, 30)) }
		rep.printf("\nA commissioning scan over units 1-%d (all configured, 30 present) found %d units in %s (exactly 1-30: %v); the same scan again found %d in %s.\n",
			last, len(first), took1.Round(time.Millisecond), exact(first), len(again), took2.Round(time.Millisecond))
		targets = append(targets, target{"commissioning scan over 1-247 with 30 present: exactly those answer; the scan again under 5 s",
			fmt.Sprintf("%d then %d found, the second in %s, %d wrong", len(first), len(again), took2.Round(time.Millisecond), w1+w2),
			exact(first) && exact(again) && took2 < 5*time.Second && w1+w2 == 0})
	}
	return targets, nil
}
