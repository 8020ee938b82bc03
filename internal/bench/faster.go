//go:build linux

package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mcpgw/mcpgw/internal/loadtest"
	"github.com/mcpgw/mcpgw/pkg/pdu"
	"github.com/mcpgw/mcpgw/pkg/registers"
)

// A clock device's first clockRegs holding registers hold its clock:
// each reads as its address's low 4 bits above the wall clock's
// milliseconds modulo 4096, taken when the device answers. A master on
// the same machine then knows how old every value it is served is (up to
// 4 s), and whether it is the register it asked for.
const clockRegs = 100

// clockValue is register a's value at time t.
func clockValue(a int, t time.Time) uint16 {
	return uint16(a&0xF)<<12 | uint16(t.UnixMilli()%4096)
}

// clockAge returns how old register a's value v is at now; ok is false if
// v is not a clock value of register a.
func clockAge(a int, v uint16, now time.Time) (age time.Duration, ok bool) {
	if int(v>>12) != a&0xF {
		return 0, false
	}
	ms := (now.UnixMilli()%4096 - int64(v&0xFFF) + 4096) % 4096
	return time.Duration(ms) * time.Millisecond, true
}

// stampClock is a clock device's sim.Line.BeforeAnswer: a read of its
// first registers gets the clock now.
func stampClock(_ byte, req []byte, m *registers.Model) {
	fc, addr, qty, ok := pdu.ParseRead(req)
	if !ok || fc != pdu.ReadHoldingRegisters {
		return
	}
	now := time.Now()
	m.Lock()
	defer m.Unlock()
	for a := int(addr); a < min(int(addr)+int(qty), clockRegs); a++ {
		m.Holding[a] = clockValue(a, now)
	}
}

// fasterRow is one run of masters against one line.
type fasterRow struct {
	answers   int
	wrong     int
	failed    int
	elapsed   time.Duration
	lat       []time.Duration
	maxAge    time.Duration
	lineFrame float64 // the line's frames per second
}

func (r *fasterRow) perSecond() float64 { return float64(r.answers) / r.elapsed.Seconds() }

// fasterBlocks are the blocks every master reads: 10 registers each.
var fasterBlocks = []int{0, 10, 20, 30}

// benchFaster measures what is faster than the wire: four masters polling the same blocks of
// a clock device on a paced 19200 line, through a line with each way of
// answering: transparent (every read on the wire), shared reads, the
// cache, and agent mode.
func benchFaster(ctx context.Context, rep *report, d func(time.Duration) time.Duration, stderr io.Writer) ([]target, error) {
	modes := []struct {
		name, conf string
		unit       byte
	}{
		{"transparent", "shared_reads = false\n", 61},
		{"shared reads", "", 62},
		{"cache, cache_max_age = 1s", "cache_max_age = \"1s\"\n", 63},
		{"agent mode, polls every 1 s", "", 64},
	}
	var buses strings.Builder
	metricsAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(&buses, "[metrics]\nlisten = %q\n", metricsAddr)
	var paced *benchLine
	for i, m := range modes {
		l := &benchLine{name: m.name, baud: 19200, paced: true, units: []byte{m.unit}, clock: true, noTwin: true}
		if err := l.open(ctx); err != nil {
			return nil, err
		}
		defer l.close()
		paced = l
		fmt.Fprintf(&buses, "[[bus]]\nname = \"mode%d\"\nport = %q\nbaud = 19200\nparity = \"N\"\nstop_bits = 2\nunits = [%d]\n%s", i, l.gwPath, m.unit, m.conf)
		if i == 3 {
			for _, a := range fasterBlocks {
				fmt.Fprintf(&buses, "[[bus.poll]]\nunit = %d\nfunction = 3\naddress = %d\ncount = 10\ninterval = \"1s\"\n", m.unit, a)
			}
		}
	}
	gw, addr, err := startGatewayProcess(buses.String(), 100, "warn", stderr)
	if err != nil {
		return nil, err
	}
	defer gw.stop()
	time.Sleep(1500 * time.Millisecond) // agent mode's first polls

	wire := time.Duration(8+25) * paced.char()
	gap := paced.gap
	capacity := 1 / (wire + gap).Seconds()
	window := d(6 * time.Second)
	frames := func(line int) float64 { return scrapeFrames(metricsAddr, fmt.Sprintf("mode%d", line)) }
	// run has masters read the blocks of unit: back to back, or each
	// scanning them once a second from a moment of its own.
	run := func(line int, unit byte, masters int, scan bool) (*fasterRow, error) {
		f0 := frames(line)
		row := &fasterRow{}
		var mu sync.Mutex
		var wg sync.WaitGroup
		start := time.Now()
		end := start.Add(window)
		if scan { // every master scans at least once
			end = start.Add(max(window, 2*time.Second))
		}
		for k := range masters {
			wg.Go(func() {
				c := loadtest.NewClient(addr, 10*time.Second, uint16(k*1000))
				defer c.Close()
				rnd := rand.New(rand.NewPCG(uint64(k), 12))
				next := start.Add(time.Duration(rnd.Int64N(int64(time.Second))))
				for {
					if scan {
						if !next.Before(end) {
							return
						}
						time.Sleep(time.Until(next))
						next = next.Add(time.Second)
					} else if !time.Now().Before(end) {
						return
					}
					for _, a := range fasterBlocks {
						p, lat, err := c.Read(ctx, unit, a, 10)
						now := time.Now()
						mu.Lock()
						switch {
						case err != nil || len(p) != 22 || p[0] != pdu.ReadHoldingRegisters:
							row.failed++
						default:
							ok := true
							for i := range 10 {
								v := uint16(p[2+2*i])<<8 | uint16(p[3+2*i])
								age, right := clockAge(a+i, v, now)
								ok = ok && right
								row.maxAge = max(row.maxAge, age)
							}
							if !ok {
								row.wrong++
							}
							row.answers++
							row.lat = append(row.lat, lat)
						}
						mu.Unlock()
					}
				}
			})
		}
		wg.Wait()
		row.elapsed = time.Since(start)
		row.lineFrame = (frames(line) - f0) / row.elapsed.Seconds()
		if row.answers == 0 {
			return nil, fmt.Errorf("%s, %d masters: no answers (%d failed)", modes[line].name, masters, row.failed)
		}
		return row, nil
	}

	rep.printf("\n## Faster than the wire: shared reads, the cache, agent mode\n\n")
	rep.printf("Masters read the same four blocks of 10 holding registers of one device on a paced 19200 8N2 line, whose capacity is %.1f transactions a second (%s on the wire and t3.5 each). The device writes its clock into every register it is asked for, so each master knows how old every value it gets is, and that it is the register it asked for (wrong: a value of another register). Back to back: each master reads the blocks in turn as fast as it is answered. Scanning: each master reads the four blocks once a second, from a moment of its own. The line's transactions are the gateway's own count of frames sent (`mcpgw_line_frames_total`). What one scanning master costs the line is measured on the transparent line, where each of its reads is a transaction: on the cached line a lone master scanning once a second finds its own values from the last scan still a little younger than the second every other time (they were stamped when their answers came back), so its row there shows the cache saving it half its reads, not what it costs.\n\n",
		capacity, ms(wire))
	rep.printf("| line | masters | reading | answers | per second | line transactions per second | p50 | p99 | oldest value | wrong | failed |\n|---|---|---|---|---|---|---|---|---|---|---|\n")
	rows := make(map[string]*fasterRow)
	for _, r := range []struct {
		line    int
		masters int
		scan    bool
	}{{0, 1, false}, {0, 4, false}, {0, 1, true}, {1, 1, false}, {1, 4, false}, {2, 1, true}, {2, 4, true}, {3, 4, false}} {
		row, err := run(r.line, modes[r.line].unit, r.masters, r.scan)
		if err != nil {
			return nil, err
		}
		how := "back to back"
		if r.scan {
			how = "scanning each second"
		}
		key := fmt.Sprintf("%d/%d", r.line, r.masters)
		if r.scan {
			key += " scan"
		}
		rows[key] = row
		rep.printf("| %s | %d | %s | %d | %.1f | %.1f | %s | %s | %s | %d | %d |\n", modes[r.line].name, r.masters, how, row.answers, row.perSecond(),
			row.lineFrame, ms(loadtest.Percentile(row.lat, 50)), ms(loadtest.Percentile(row.lat, 99)), ms(row.maxAge), row.wrong, row.failed)
	}

	// A write is read back at once by another master through the cache.
	readBack, tries := 0, 5
	w := loadtest.NewClient(addr, 10*time.Second, 7000)
	r := loadtest.NewClient(addr, 10*time.Second, 8000)
	for i := range tries {
		reg := 500 + i
		if _, _, err := r.Read(ctx, modes[2].unit, reg, 1); err != nil { // cached now
			return nil, err
		}
		v := uint16(4242 + i)
		if _, err := w.Write(ctx, modes[2].unit, reg, v); err != nil {
			return nil, err
		}
		p, _, err := r.Read(ctx, modes[2].unit, reg, 1)
		if err == nil && len(p) == 4 && uint16(p[2])<<8|uint16(p[3]) == v {
			readBack++
		}
	}
	w.Close()
	r.Close()
	rep.printf("\nA write through the cached line, read back at once by another master (the register was cached just before): %d of %d writes seen.\n", readBack, tries)

	oneTx := wire + gap
	var targets []target
	s1, s4 := rows["1/1"], rows["1/4"]
	ratio := s4.perSecond() / s1.perSecond()
	targets = append(targets, target{"shared reads: 4 masters back to back get at least 3.5 times one master's answers",
		fmt.Sprintf("%.2f times (%.1f/s vs %.1f/s)", ratio, s4.perSecond(), s1.perSecond()), ratio >= 3.5})
	one, c1, c4 := rows["0/1 scan"], rows["2/1 scan"], rows["2/4 scan"]
	cost := c4.lineFrame / one.lineFrame
	targets = append(targets, target{"cache 1 s: 4 scanning masters cost the line at most 1.1 times what one scanning master costs",
		fmt.Sprintf("%.2f times (%.1f vs %.1f transactions/s)", cost, c4.lineFrame, one.lineFrame), cost <= 1.1})
	oldest := max(c1.maxAge, c4.maxAge)
	targets = append(targets, target{"cache 1 s: no value older than cache_max_age plus one transaction",
		fmt.Sprintf("%s (limit %s)", ms(oldest), ms(time.Second+oneTx)), oldest <= time.Second+oneTx})
	targets = append(targets, target{"cache: a write is read back at once by another master", fmt.Sprintf("%d of %d", readBack, tries), readBack == tries})
	a := rows["3/4"]
	targets = append(targets, target{"agent mode: masters get at least 10 times the line's capacity in answers",
		fmt.Sprintf("%.0f/s, %.0f times %.1f/s", a.perSecond(), a.perSecond()/capacity, capacity), a.perSecond() >= 10*capacity})
	p99 := loadtest.Percentile(a.lat, 99)
	targets = append(targets, target{"agent mode: read latency p99 under 2 ms", ms(p99), p99 < 2*time.Millisecond})
	targets = append(targets, target{"agent mode: every value at most the interval plus one transaction old",
		fmt.Sprintf("%s (limit %s)", ms(a.maxAge), ms(time.Second+oneTx)), a.maxAge <= time.Second+oneTx})
	wrong := 0
	for _, row := range rows {
		wrong += row.wrong
	}
	targets = append(targets, target{"shared reads, cache, agent mode: zero wrong or misplaced values", strconv.Itoa(wrong), wrong == 0})
	return targets, nil
}

// scrapeFrames reads mcpgw_line_frames_total for line from the gateway's
// metrics listener (-1 if it cannot).
func scrapeFrames(addr, line string) float64 {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	want := `mcpgw_line_frames_total{line="` + line + `"} `
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), want); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return -1
}
