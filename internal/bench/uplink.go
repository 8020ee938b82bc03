//go:build linux

package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"google.golang.org/protobuf/proto"

	"github.com/mcpgw/mcpgw/pkg/north/sparkplug/sproto"
)

// uplink is a TCP relay between the gateway and the broker that the
// bench can cut: an uplink outage the subscriber, connected to the
// broker directly, does not see.
type uplink struct {
	l      net.Listener
	target string
	mu     sync.Mutex
	down   bool
	conns  map[net.Conn]struct{}
}

func newUplink(target string) (*uplink, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	u := &uplink{l: l, target: target, conns: map[net.Conn]struct{}{}}
	go u.serve()
	return u, nil
}

func (u *uplink) addr() string { return u.l.Addr().String() }

func (u *uplink) serve() {
	for {
		c, err := u.l.Accept()
		if err != nil {
			return
		}
		u.mu.Lock()
		down := u.down
		u.mu.Unlock()
		if down {
			c.Close()
			continue
		}
		b, err := net.Dial("tcp", u.target)
		if err != nil {
			c.Close()
			continue
		}
		u.mu.Lock()
		u.conns[c], u.conns[b] = struct{}{}, struct{}{}
		u.mu.Unlock()
		pipe := func(dst, src net.Conn) {
			io.Copy(dst, src)
			dst.Close()
			src.Close()
		}
		go pipe(b, c)
		go pipe(c, b)
	}
}

// set cuts the uplink (closing what is open) or restores it.
func (u *uplink) set(down bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.down = down
	if down {
		for c := range u.conns {
			c.Close()
		}
		clear(u.conns)
	}
}

func (u *uplink) close() { u.l.Close(); u.set(true) }

// mosquittoOn starts a broker on a free loopback port.
func mosquittoOn(ctx context.Context, dir string) (*exec.Cmd, string, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, "", err
	}
	_, p, _ := strings.Cut(addr, ":")
	conf := filepath.Join(dir, "mosquitto-"+p+".conf")
	if err := os.WriteFile(conf, []byte("listener "+p+" 127.0.0.1\nallow_anonymous true\npersistence false\n"), 0o644); err != nil {
		return nil, "", err
	}
	cmd := exec.CommandContext(ctx, "mosquitto", "-c", conf)
	if err := cmd.Start(); err != nil {
		return nil, "", err
	}
	if err := waitListening(addr, 5*time.Second); err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		return nil, "", fmt.Errorf("mosquitto: %w", err)
	}
	return cmd, addr, nil
}

// spPoint is a value as a host receives it.
type spPoint struct {
	ts         uint64 // the metric's timestamp: when the gateway read it
	value      uint16
	historical bool
}

// spSubscriber is a Sparkplug host in the bench's process (paho): what
// it receives of each metric of each device, by name.
type spSubscriber struct {
	c      mqtt.Client
	mu     sync.Mutex
	names  map[string]map[uint64]string // device → alias → name
	points map[string][]spPoint         // "device/name" → values in arrival order
	births []time.Time                  // NBIRTH arrivals
	hist   int                          // historical DDATA messages
	last   time.Time                    // the last historical DDATA's arrival
}

func newSubscriber(broker, label string) (*spSubscriber, error) {
	s := &spSubscriber{names: map[string]map[uint64]string{}, points: map[string][]spPoint{}}
	opts := mqtt.NewClientOptions().AddBroker("tcp://" + broker).SetClientID("mcpgw-bench-host-" + label).SetCleanSession(true).
		SetAutoReconnect(false)
	s.c = mqtt.NewClient(opts)
	if t := s.c.Connect(); !t.WaitTimeout(5*time.Second) || t.Error() != nil {
		return nil, fmt.Errorf("subscriber: %v", t.Error())
	}
	handle := func(_ mqtt.Client, m mqtt.Message) {
		now := time.Now()
		var pl sproto.Payload
		if proto.Unmarshal(m.Payload(), &pl) != nil {
			return
		}
		parts := strings.Split(m.Topic(), "/")
		s.mu.Lock()
		defer s.mu.Unlock()
		switch {
		case parts[2] == "NBIRTH":
			s.births = append(s.births, now)
		case parts[2] == "DBIRTH" && len(parts) == 5:
			names := map[uint64]string{}
			for _, mt := range pl.Metrics {
				names[mt.GetAlias()] = mt.GetName()
			}
			s.names[parts[4]] = names
		case parts[2] == "DDATA" && len(parts) == 5:
			hist := false
			for _, mt := range pl.Metrics {
				key := parts[4] + "/" + s.names[parts[4]][mt.GetAlias()]
				s.points[key] = append(s.points[key], spPoint{ts: mt.GetTimestamp(), value: uint16(mt.GetIntValue()), historical: mt.GetIsHistorical()})
				hist = hist || mt.GetIsHistorical()
			}
			if hist {
				s.hist++
				s.last = now
			}
		}
	}
	if t := s.c.Subscribe("spBv1.0/bench/#", 0, handle); !t.WaitTimeout(5*time.Second) || t.Error() != nil {
		return nil, fmt.Errorf("subscriber: %v", t.Error())
	}
	return s, nil
}

func (s *spSubscriber) reset() {
	s.mu.Lock()
	clear(s.points)
	s.hist = 0
	s.last = time.Time{}
	s.mu.Unlock()
}

// drained waits until historical data has stopped coming for quiet, and
// returns the historical messages and the time from since to the last.
func (s *spSubscriber) drained(since time.Time, quiet, within time.Duration) (int, time.Duration) {
	end := time.Now().Add(within)
	for time.Now().Before(end) {
		time.Sleep(100 * time.Millisecond)
		s.mu.Lock()
		n, last := s.hist, s.last
		s.mu.Unlock()
		if n > 0 && time.Since(last) > quiet {
			return n, last.Sub(since)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hist, s.last.Sub(since)
}

// birthAfter waits for an NBIRTH after t.
func (s *spSubscriber) birthAfter(t time.Time, within time.Duration) (time.Duration, bool) {
	for end := time.Now().Add(within); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		s.mu.Lock()
		bs := s.births
		s.mu.Unlock()
		for _, b := range bs {
			if b.After(t) {
				return b.Sub(t), true
			}
		}
	}
	return 0, false
}

// benchUplink measures what the node keeps while its uplink is away:
// the rate it can keep and replay, on disk and in memory; a long outage
// with a kill -9 in the middle, every value accounted for; and the time
// from a broker's death to the births on the next.
func benchUplink(ctx context.Context, rep *report, d func(time.Duration) time.Duration, stderr io.Writer) ([]target, error) {
	rep.printf("\n## Sparkplug B: an uplink that loses nothing\n\n")
	if _, err := exec.LookPath("mosquitto"); err != nil {
		rep.printf("Skipped: mosquitto is not installed (apt-get install mosquitto).\n")
		return nil, nil
	}
	dir, err := os.MkdirTemp("", "mcpgw-bench-uplink")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	broker, addr, err := mosquittoOn(ctx, dir)
	if err != nil {
		return nil, err
	}
	defer func() { broker.Process.Kill(); broker.Wait() }()
	up, err := newUplink(addr)
	if err != nil {
		return nil, err
	}
	defer up.close()
	sub, err := newSubscriber(addr, "a")
	if err != nil {
		return nil, err
	}
	defer sub.c.Disconnect(0)

	// Clock devices (every value changes at every read), closed at the end.
	var opened []*benchLine
	defer func() {
		for _, l := range opened {
			l.close()
		}
	}()
	newLines := func(n, units int, first byte) ([]*benchLine, error) {
		var ls []*benchLine
		for i := range n {
			var us []byte
			for u := range units {
				us = append(us, first+byte(10*i+u))
			}
			l := &benchLine{name: fmt.Sprintf("up%d", i), baud: 115200, units: us, clock: true, noTwin: true}
			opened = append(opened, l)
			if err := l.open(ctx); err != nil {
				return ls, err
			}
			ls = append(ls, l)
		}
		return ls, nil
	}
	var metricsAddr string
	config := func(ls []*benchLine, every time.Duration, mqttKeys string) string {
		var b strings.Builder
		metricsAddr, _ = freeAddr()
		fmt.Fprintf(&b, "[metrics]\nlisten = %q\n[mqtt]\ngroup = \"bench\"\nnode = \"gw\"\n%s\n", metricsAddr, mqttKeys)
		for i, l := range ls {
			fmt.Fprintf(&b, "[[bus]]\nname = \"up%d\"\nport = %q\nbaud = 115200\nparity = \"N\"\nstop_bits = 2\nunits = [%s]\n", i, l.gwPath, unitList(l.units))
			for _, u := range l.units {
				fmt.Fprintf(&b, "[[bus.poll]]\nunit = %d\nfunction = 3\naddress = 0\ncount = 10\ninterval = %q\n", u, every)
				for r := range 10 {
					fmt.Fprintf(&b, "[[bus.poll.value]]\nname = \"r%d\"\noffset = %d\ntype = \"uint16\"\n", r, r)
				}
			}
		}
		return b.String()
	}

	// 1. Throughput: the Sparkplug bench's fastest polling, the uplink
	// away for a while, then back.
	ls, err := newLines(4, 10, 100)
	if err != nil {
		return nil, err
	}
	outage := d(10 * time.Second)
	rep.printf("4 lines at 115200 (unpaced) of 10 clock devices each, every device polled every 20 ms for 10 registers (the fastest row of the Sparkplug bench above), published through a relay the bench cuts for %s (the subscriber stays connected to the broker), then restores. Kept: the messages the node took while the uplink was away (until it was born again: it tries again after a backoff), per second; replayed: those messages after the births, per second, from the births (once the node tried again) to the last historical message.\n\n", outage)
	rep.printf("| where messages wait | kept per second | values | replayed per second | dropped | gateway CPU while away |\n|---|---|---|---|---|---|\n")
	var diskReplay, rateSeen float64
	for _, row := range []struct{ name, keys string }{
		{"memory (buffer = 1000000)", "buffer = 1000000"},
		{"disk (store)", fmt.Sprintf("store = %q", mustDir(dir, "store-throughput"))},
	} {
		started := time.Now()
		gw, _, err := startGatewayProcess(config(ls, 20*time.Millisecond, fmt.Sprintf("brokers = [\"tcp://%s\"]\n%s", up.addr(), row.keys)), 100, "warn", stderr)
		if err != nil {
			return nil, err
		}
		if _, ok := sub.birthAfter(started, 15*time.Second); !ok {
			gw.stop()
			return nil, errors.New("uplink: no births")
		}
		time.Sleep(time.Second)
		up.set(true)
		cut := time.Now()
		cpu0 := gw.cpu()
		time.Sleep(outage)
		cpu := gw.cpu() - cpu0
		sub.reset()
		back := time.Now()
		up.set(false)
		born, ok := sub.birthAfter(back, 60*time.Second)
		if !ok {
			gw.stop()
			return nil, errors.New("uplink: no births after the uplink came back")
		}
		n, took := sub.drained(back.Add(born), 2*time.Second, outage*3+30*time.Second)
		sub.mu.Lock()
		vals := 0
		for _, ps := range sub.points {
			for _, p := range ps {
				if p.historical {
					vals++
				}
			}
		}
		sub.mu.Unlock()
		dropped := scrapeCounter(metricsAddr, "mcpgw_mqtt_buffer_dropped_total")
		gw.stop()
		replay := float64(n) / took.Seconds()
		away := back.Add(born).Sub(cut) // the node keeps until it is born again
		rep.printf("| %s | %.0f | %d | %.0f | %s | %.0f %% |\n", row.name, float64(n)/away.Seconds(), vals, replay, dropped, 100*cpu.Seconds()/outage.Seconds())
		if strings.HasPrefix(row.name, "disk") {
			diskReplay = replay
		} else {
			rateSeen = float64(n) / away.Seconds()
		}
		time.Sleep(time.Second)
	}

	// 2. The target: 400 values a second, the broker away for a minute,
	// the gateway killed and started again in the middle.
	long := d(60 * time.Second)
	tl, err := newLines(1, 4, 200)
	if err != nil {
		return nil, err
	}
	store := mustDir(dir, "store-kill")
	cfg := config(tl, 100*time.Millisecond, fmt.Sprintf("brokers = [\"tcp://%s\"]\nstore = %q", up.addr(), store))
	started := time.Now()
	gw, _, err := startGatewayProcess(cfg, 100, "warn", stderr)
	if err != nil {
		return nil, err
	}
	if _, ok := sub.birthAfter(started, 15*time.Second); !ok {
		gw.stop()
		return nil, errors.New("uplink: no births")
	}
	time.Sleep(time.Second)
	sub.reset()
	up.set(true)
	away := time.Now()
	time.Sleep(long / 2)
	killed := time.Now()
	gw.cmd.Process.Kill()
	gw.cmd.Wait()
	os.RemoveAll(gw.dir)
	gw, _, err = startGatewayProcess(cfg, 100, "warn", stderr)
	if err != nil {
		return nil, err
	}
	restarted := time.Now()
	time.Sleep(long - time.Since(away))
	returned := time.Now()
	up.set(false)
	born, ok := sub.birthAfter(returned, 60*time.Second)
	if !ok {
		gw.stop()
		return nil, errors.New("uplink: no births after the uplink came back")
	}
	sub.drained(returned, 3*time.Second, long+30*time.Second)
	gw.stop()
	lost, twice, outOfOrder, wrong, kept := 0, 0, 0, 0, 0
	var gaps []time.Duration
	sub.mu.Lock()
	for _, ps := range sub.points {
		var hs []spPoint
		for _, p := range ps {
			if p.historical {
				hs = append(hs, p)
			}
		}
		kept += len(hs)
		for i, p := range hs {
			if !clockNear(p.value, p.ts) {
				wrong++
			}
			if i == 0 {
				continue
			}
			switch prev := hs[i-1]; {
			case p.ts == prev.ts:
				twice++
			case p.ts < prev.ts:
				outOfOrder++
			case int64(prev.ts) < killed.UnixMilli() && int64(p.ts) > killed.UnixMilli():
				gaps = append(gaps, time.Duration(p.ts-prev.ts)*time.Millisecond) // no gateway ran for part of it
			case time.Duration(p.ts-prev.ts)*time.Millisecond > 300*time.Millisecond:
				lost++
			}
		}
	}
	metrics := len(sub.points)
	sub.mu.Unlock()
	sort.Slice(gaps, func(i, j int) bool { return gaps[i] < gaps[j] })
	expect := int(400 * (returned.Add(born).Sub(away) - restarted.Sub(killed)).Seconds()) // until the births, less the kill
	var gapNote string
	if len(gaps) > 0 {
		gapNote = fmt.Sprintf("%s to %s", gaps[0].Round(time.Millisecond), gaps[len(gaps)-1].Round(time.Millisecond))
	}
	rep.printf("\n4 clock devices polled every 100 ms for 10 registers each: 400 values a second, each changing at every read. The uplink is cut for %s; in its middle the gateway (mqtt.store set) is killed with SIGKILL and started again (%s later). Afterwards the subscriber checks, per metric, every historical value it received: each value agrees with its own timestamp (the device's clock), timestamps only rise, and consecutive values are one poll apart, except across the kill, while no gateway ran.\n\n",
		long, restarted.Sub(killed).Round(time.Millisecond))
	rep.printf("| metrics | historical values | about expected | gap across the kill | gaps elsewhere (lost) | twice | out of order | not the device's clock |\n|---|---|---|---|---|---|---|---|\n")
	rep.printf("| %d | %d | %d | %s | %d | %d | %d | %d |\n", metrics, kept, expect, gapNote, lost, twice, outOfOrder, wrong)

	// 3. Two brokers: the one in use dies; births on the other.
	b2, addr2, err := mosquittoOn(ctx, dir)
	if err != nil {
		return nil, err
	}
	defer func() { b2.Process.Kill(); b2.Wait() }()
	sub2, err := newSubscriber(addr2, "b")
	if err != nil {
		return nil, err
	}
	defer sub2.c.Disconnect(0)
	fl, err := newLines(1, 2, 220)
	if err != nil {
		return nil, err
	}
	started = time.Now()
	gw, _, err = startGatewayProcess(config(fl, time.Second, fmt.Sprintf("brokers = [\"tcp://%s\", \"tcp://%s\"]", addr, addr2)), 100, "warn", stderr)
	if err != nil {
		return nil, err
	}
	defer gw.stop()
	if _, ok := sub.birthAfter(started, 15*time.Second); !ok {
		return nil, errors.New("failover: no births on the first broker")
	}
	// The brokers, their addresses and subscribers: the node begins on
	// the first; each round kills the one in use and brings it back.
	brokers, addrs, subs := [2]*exec.Cmd{broker, b2}, [2]string{addr, addr2}, [2]*spSubscriber{sub, sub2}
	defer func() { // the ones brought back
		for _, b := range brokers {
			b.Process.Kill()
			b.Wait()
		}
	}()
	var failovers []time.Duration
	for round := range 3 {
		dying, other := round%2, 1-round%2
		t0 := time.Now()
		brokers[dying].Process.Kill()
		brokers[dying].Wait()
		took, ok := subs[other].birthAfter(t0, 30*time.Second)
		if !ok {
			return nil, fmt.Errorf("failover round %d: no births on the other broker", round+1)
		}
		failovers = append(failovers, took)
		// Bring the dead one back on its port, with a subscriber.
		_, p, _ := strings.Cut(addrs[dying], ":")
		again := exec.CommandContext(ctx, "mosquitto", "-c", filepath.Join(dir, "mosquitto-"+p+".conf"))
		if err := again.Start(); err != nil {
			return nil, err
		}
		brokers[dying] = again
		if err := waitListening(addrs[dying], 5*time.Second); err != nil {
			return nil, err
		}
		if subs[dying], err = newSubscriber(addrs[dying], fmt.Sprintf("%s-%d", [2]string{"a", "b"}[dying], round)); err != nil {
			return nil, err
		}
		defer subs[dying].c.Disconnect(0)
		time.Sleep(time.Second)
	}
	var fs []string
	for _, f := range failovers {
		fs = append(fs, f.Round(time.Millisecond).String())
	}
	worst := slices.Max(failovers)
	rep.printf("\nTwo Mosquittos, `brokers` listing both; the one with the session is killed, three times in turn: births on the other after %s.\n", strings.Join(fs, ", "))
	return []target{
		{name: "uplink: disk store replays at least the Sparkplug bench's publish rate", got: fmt.Sprintf("%.0f/s replayed (kept %.0f/s in memory)", diskReplay, rateSeen), ok: diskReplay >= rateSeen*0.9},
		{name: "uplink: a minute away with a kill -9: none lost, none twice, in order", got: fmt.Sprintf("%d values, %d lost, %d twice, %d out of order", kept, lost, twice, outOfOrder), ok: kept > expect*9/10 && lost == 0 && twice == 0 && outOfOrder == 0 && wrong == 0},
		{name: "uplink: births on the next broker within 5 s of the first's death", got: worst.Round(time.Millisecond).String(), ok: worst <= 5*time.Second},
	}, nil
}

// clockNear reports whether a clock register's value agrees with the
// timestamp of its reading: the device's clock when it answered, the
// timestamp when the gateway had the answer, within 50 ms.
func clockNear(v uint16, ts uint64) bool {
	d := (int64(ts)%4096 - int64(v&0xFFF) + 4096) % 4096
	return d <= 50
}

func mustDir(parent, name string) string {
	p := filepath.Join(parent, name)
	os.MkdirAll(p, 0o755)
	return p
}

// scrapeCounter reads a counter from the gateway's /metrics, or says
// why it could not.
func scrapeCounter(addr, name string) string {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return "? (" + err.Error() + ")"
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, name+" "); ok {
			return v
		}
	}
	return "? (no " + name + ")"
}
