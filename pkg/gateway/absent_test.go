package gateway_test

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/goburrow/modbus"
	"github.com/mcpgw/mcpgw/pkg/chain/offline"
	"github.com/mcpgw/mcpgw/pkg/config"
	"github.com/mcpgw/mcpgw/pkg/gateway"
	"github.com/mcpgw/mcpgw/pkg/registers"
	"github.com/mcpgw/mcpgw/pkg/tools/sim"
	"github.com/mcpgw/mcpgw/pkg/wire/serialport"
)

// Absent devices cost a line almost nothing: the tests of the offline
// rule's first-failure rule, the line's silence budget, its fair share by
// cost, discovery and a vanished port, through the whole gateway. The
// rig's units 1-3 answer; 4-9 are configured with no device.

// poll reads unit's holding registers back to back until stop, checking
// every value, and counts the answers; any failure fails the test.
func poll(t *testing.T, addr string, unit byte, stop <-chan struct{}, n *atomic.Int64) {
	h := modbus.NewTCPClientHandler(addr)
	h.SlaveId, h.Timeout = unit, 5*time.Second
	defer h.Close()
	cl := modbus.NewClient(h)
	for a := 0; ; a = (a + 7) % 900 {
		select {
		case <-stop:
			return
		default:
		}
		got, err := cl.ReadHoldingRegisters(uint16(a), 2)
		if err != nil {
			t.Errorf("unit %d: %v", unit, err)
			return
		}
		if v := binary.BigEndian.Uint16(got); v != registers.PatternHolding(unit, a) {
			t.Errorf("unit %d register %d: WRONG ANSWER %d", unit, a, v)
			return
		}
		n.Add(1)
	}
}

// TestFirstFailureIsEvidence: a unit never heard that does not answer its
// first request is offline at once: one frame, no retry, then 0x0B at
// once; a unit that has answered takes offline_after failures.
func TestFirstFailureIsEvidence(t *testing.T) {
	r := startRig(t, sim.Faults{}, "")
	c := client(t, r.addr, 5)
	start := time.Now()
	_, err := c.ReadHoldingRegisters(0, 1)
	wantException(t, err, 0x0B)
	if took := time.Since(start); took < 200*time.Millisecond {
		t.Fatalf("the first request took %v: it did not listen for twice the 100 ms timeout", took)
	}
	for range 20 {
		start = time.Now()
		_, err := c.ReadHoldingRegisters(0, 1)
		wantException(t, err, 0x0B)
		// (The server spaces a connection's refusals 10 ms apart; a
		// frame on the line would listen for 200 ms.)
		if took := time.Since(start); took > 150*time.Millisecond {
			t.Fatalf("a request to the unit found absent took %v: not answered at once", took)
		}
	}
	if n := r.dev.Seen(5); n != 1 {
		t.Fatalf("%d frames to the absent unit, want one", n)
	}
	if st, _ := r.svc.Offline.State(5); st != offline.Offline {
		t.Fatalf("unit 5: %v", st)
	}
	// Unit 2 answers, then goes silent: three transactions (offline_after
	// 3), the first with its retry.
	c2 := client(t, r.addr, 2)
	if _, err := c2.ReadHoldingRegisters(0, 1); err != nil {
		t.Fatal(err)
	}
	r.dev.Mute(2, true)
	before := r.dev.Seen(2)
	for range 5 {
		_, err := c2.ReadHoldingRegisters(0, 1)
		wantException(t, err, 0x0B)
	}
	if n := r.dev.Seen(2) - before; n != 4 {
		t.Fatalf("%d frames to a unit that answered before it went silent, want 4 (2 + 1 + 1)", n)
	}
}

// TestProbeBudget: while a good client polls unit 1 back to back, a
// scanner cycling through the absent units 4-9 costs the line no more
// silence than probe_share of its time, spread out: most of its requests
// get 0x0B at once, without a frame; the good client never fails.
func TestProbeBudget(t *testing.T) {
	const share = 0.2 // a 200 ms silence every second
	r := startRig(t, sim.Faults{}, fmt.Sprintf("probe_share = %v\nprobe_interval = \"100ms\"\n", share))
	var good atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { poll(t, r.addr, 1, stop, &good) })
	time.Sleep(100 * time.Millisecond) // the good client is using the line
	scans := 0
	start := time.Now()
	wg.Go(func() {
		h := modbus.NewTCPClientHandler(r.addr)
		h.Timeout = 5 * time.Second
		defer h.Close()
		cl := modbus.NewClient(h)
		for u := 0; ; u++ {
			select {
			case <-stop:
				return
			default:
			}
			h.SlaveId = byte(4 + u%6)
			_, err := cl.ReadHoldingRegisters(0, 1)
			wantException(t, err, 0x0B)
			scans++
		}
	})
	time.Sleep(3 * time.Second)
	close(stop)
	wg.Wait()
	elapsed := time.Since(start)
	silent := 0
	for u := byte(4); u <= 9; u++ {
		silent += r.dev.Seen(u)
	}
	// Each silence is one 200 ms frame; the line starts as if it had
	// just had one. At most share of the time, and at least one.
	most := int(share*elapsed.Seconds()/0.2) + 1
	t.Logf("%v: %d scans, %d of them on the line; the good client %d answers", elapsed.Round(time.Millisecond), scans, silent, good.Load())
	if silent == 0 || silent > most {
		t.Fatalf("%d frames to absent units in %v, want 1 to %d (probe_share %v)", silent, elapsed.Round(time.Millisecond), most, share)
	}
	if scans < 10*silent {
		t.Fatalf("%d scans for %d frames: the others were not answered at once", scans, silent)
	}
}

// TestLineSharedByCost: one client polls a unit whose every request
// ends in a timeout (the offline rule off), another one that answers in
// a few milliseconds. The line's time is shared by what each costs, not
// turn by turn: the second gets most of the turns, not one in two.
func TestLineSharedByCost(t *testing.T) {
	r := startRig(t, sim.Faults{}, "offline_after = 0\n")
	var good, dead atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { poll(t, r.addr, 1, stop, &good) })
	wg.Go(func() {
		c := client(t, r.addr, 6)
		for {
			select {
			case <-stop:
				return
			default:
			}
			_, err := c.ReadHoldingRegisters(0, 1)
			wantException(t, err, 0x0B)
			dead.Add(1)
		}
	})
	time.Sleep(2 * time.Second)
	close(stop)
	wg.Wait()
	t.Logf("2 s: %d answers to the live unit, %d timeouts of the dead one", good.Load(), dead.Load())
	if good.Load() < 10*dead.Load() {
		t.Fatalf("the live unit's client had %d turns for the dead one's %d: turns by count, not by cost", good.Load(), dead.Load())
	}
}

// TestDiscovery: at start each configured unit is asked once, in the
// background: the absent ones are known before a client asks (its first
// request is answered 0x0B at once); the present ones are online. A
// reload that adds units asks them. With discover = false, nothing goes
// out unasked.
func TestDiscovery(t *testing.T) {
	dev := &sim.Line{Units: sim.NewUnits([]byte{1, 2, 3, 7}, 100)}
	path := onPty(t, dev)
	cfg := func(units string, discover bool) string {
		return fmt.Sprintf("[server]\nlisten = \"127.0.0.1:0\"\n[[bus]]\nname = \"l1\"\nport = %q\nparity = \"N\"\ntimeout = \"50ms\"\nunits = [%s]\ndiscover = %v\n", path, units, discover)
	}
	c, err := parseConfigText(cfg(`"1-5"`, true))
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	svc, addr := startServiceFrom(t, c, slog.New(slog.NewJSONHandler(logs, nil)))
	want := map[byte]offline.State{1: offline.Online, 2: offline.Online, 3: offline.Online, 4: offline.Offline, 5: offline.Offline}
	waitStates(t, svc.Offline, want)
	for u := byte(1); u <= 5; u++ {
		if n := dev.Seen(u); n > 1 {
			t.Errorf("unit %d asked %d times", u, n)
		}
	}
	start := time.Now()
	_, err = client(t, addr, 4).ReadHoldingRegisters(0, 1)
	wantException(t, err, 0x0B)
	if took := time.Since(start); took > 100*time.Millisecond || dev.Seen(4) > 1 {
		t.Fatalf("a client's first request to a unit discovery found absent took %v, %d frames to it: want it answered at once, from what discovery found", took, dev.Seen(4))
	}
	if !strings.Contains(logs.String(), `"msg":"discovery done","line":"l1","asked":5,"answered":3,"absent":2`) {
		t.Fatalf("discovery's log line:\n%s", logs.String())
	}
	// A reload adds units 6-7: 7 is there.
	c, err = parseConfigText(cfg(`"1-7"`, true))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := svc.Reload(c); err != nil {
		t.Fatal(err)
	}
	want[6], want[7] = offline.Offline, offline.Online
	waitStates(t, svc.Offline, want)

	// Off: nothing is asked.
	dev2 := &sim.Line{Units: sim.NewUnits([]byte{1}, 100)}
	path = onPty(t, dev2)
	c, err = parseConfigText(cfg(`"1-5"`, false))
	if err != nil {
		t.Fatal(err)
	}
	svc2, _ := startServiceFrom(t, c, slog.New(slog.DiscardHandler))
	time.Sleep(300 * time.Millisecond)
	if n := dev2.Stats().Requests; n != 0 {
		t.Fatalf("discover = false: the line carried %d requests", n)
	}
	if st, _ := svc2.Offline.State(4); st != offline.Unseen {
		t.Fatalf("discover = false: unit 4 %v, want unseen", st)
	}
}

// waitStates waits until the units are in the states want says.
func waitStates(t *testing.T, h *offline.Handler, want map[byte]offline.State) {
	t.Helper()
	for end := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		bad := ""
		for u, w := range want {
			if st, _ := h.State(u); st != w {
				bad += fmt.Sprintf(" unit %d %v (want %v)", u, st, w)
			}
		}
		if bad == "" {
			return
		}
		if time.Now().After(end) {
			t.Fatalf("after 5 s:%s", bad)
		}
	}
}

// TestVanishedPort: a serial port that goes away while the line is idle
// (the other end of its pseudo-terminal closed, as when a USB adapter is
// unplugged) is noticed within a second, without a request: the line is
// down, and /readyz says so.
func TestVanishedPort(t *testing.T) {
	pty, err := serialport.NewPty()
	if err != nil {
		t.Fatal(err)
	}
	defer pty.Close()
	metricsAddr := freeLoopback(t)
	svc, _ := startService(t, fmt.Sprintf("[server]\nlisten = \"127.0.0.1:0\"\n[metrics]\nlisten = %q\n[[bus]]\nname = \"usb0\"\nport = %q\nunits = [1]\ndiscover = false\n",
		metricsAddr, pty.Path), slog.New(slog.DiscardHandler))
	time.Sleep(100 * time.Millisecond)
	gone := time.Now()
	pty.Close()
	for !time.Now().After(gone.Add(time.Second)) {
		if !svc.Lines()[0].Up() {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if svc.Lines()[0].Up() {
		t.Fatal("the line is still up a second after its port went away")
	}
	code, body := get(t, "http://"+metricsAddr+"/readyz")
	if code != 503 || !strings.Contains(body, "usb0") {
		t.Fatalf("/readyz: %d %s", code, body)
	}
}

// TestUnitStatesShown: the metrics and the status page show every
// configured unit as online, offline or unseen.
func TestUnitStatesShown(t *testing.T) {
	dev := &sim.Line{Units: sim.NewUnits([]byte{1}, 100)}
	path := onPty(t, dev)
	metricsAddr := freeLoopback(t)
	svc, addr := startService(t, fmt.Sprintf("[server]\nlisten = \"127.0.0.1:0\"\n[metrics]\nlisten = %q\n[[bus]]\nname = \"l1\"\nport = %q\nparity = \"N\"\ntimeout = \"50ms\"\nunits = [1, 2, 3]\ndiscover = false\n",
		metricsAddr, path), slog.New(slog.DiscardHandler))
	if _, err := client(t, addr, 1).ReadHoldingRegisters(0, 1); err != nil {
		t.Fatal(err)
	}
	_, err := client(t, addr, 2).ReadHoldingRegisters(0, 1)
	wantException(t, err, 0x0B)
	waitStates(t, svc.Offline, map[byte]offline.State{1: offline.Online, 2: offline.Offline, 3: offline.Unseen})
	_, text := get(t, "http://"+metricsAddr+"/metrics")
	v := metricValues(text)
	for name, want := range map[string]float64{
		`mcpgw_unit_state{line="l1",state="online",unit="1"}`:  1,
		`mcpgw_unit_state{line="l1",state="offline",unit="1"}`: 0,
		`mcpgw_unit_state{line="l1",state="offline",unit="2"}`: 1,
		`mcpgw_unit_state{line="l1",state="unseen",unit="3"}`:  1,
		`mcpgw_unit_state{line="l1",state="online",unit="3"}`:  0,
	} {
		if v[name] != want {
			t.Errorf("%s = %v, want %v", name, v[name], want)
		}
	}
	// The status page draws its units from /api/status.
	_, body := get(t, "http://"+metricsAddr+"/api/status")
	var api struct {
		Units []struct {
			Unit  int    `json:"unit"`
			State string `json:"state"`
			Since string `json:"since"`
		} `json:"units"`
	}
	if err := json.Unmarshal([]byte(body), &api); err != nil {
		t.Fatalf("/api/status: %v", err)
	}
	got := map[int]string{}
	for _, u := range api.Units {
		got[u.Unit] = u.State
		if u.State == "offline" && u.Since == "" {
			t.Errorf("unit %d offline, but since when is not said", u.Unit)
		}
	}
	if got[1] != "online" || got[2] != "offline" || got[3] != "unseen" || len(got) != 3 {
		t.Errorf("/api/status's units: %v, want 1 online, 2 offline, 3 unseen", got)
	}
}

// parseConfigText and startServiceFrom are startService in two steps,
// for a test that reloads.
func parseConfigText(text string) (*config.Config, error) { return config.Parse(text) }

func startServiceFrom(t *testing.T, cfg *config.Config, log *slog.Logger) (*gateway.Service, string) {
	t.Helper()
	svc, err := gateway.NewService(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	addr, err := svc.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		svc.Shutdown(ctx)
	})
	return svc, addr.String()
}

// freeLoopback is a loopback address nothing listens on.
func freeLoopback(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// TestUnitComesBack: a unit switched on while offline answers its
// clients again within probe_interval and a transaction, when the line
// is otherwise quiet (a probe then costs nobody).
func TestUnitComesBack(t *testing.T) {
	r := startRig(t, sim.Faults{}, "probe_interval = \"500ms\"\n")
	r.dev.Mute(2, true) // switched off before the gateway first asks
	c := client(t, r.addr, 2)
	_, err := c.ReadHoldingRegisters(0, 1)
	wantException(t, err, 0x0B)
	if st, _ := r.svc.Offline.State(2); st != offline.Offline {
		t.Fatalf("unit 2: %v", st)
	}
	time.Sleep(200 * time.Millisecond)
	r.dev.Mute(2, false)
	on := time.Now()
	for {
		if _, err := c.ReadHoldingRegisters(0, 1); err == nil {
			break
		}
		if time.Since(on) > 500*time.Millisecond+time.Second {
			t.Fatal("unit 2 did not answer within probe_interval and a transaction of being switched on")
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("back %v after it was switched on", time.Since(on).Round(time.Millisecond))
}
