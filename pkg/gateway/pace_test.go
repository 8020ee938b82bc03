package gateway_test

import (
	"encoding/binary"
	"encoding/json"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/goburrow/modbus"
	"github.com/mcpgw/mcpgw/pkg/registers"
	"github.com/mcpgw/mcpgw/pkg/tools/sim"
)

// The line's pace through the whole gateway: a line that
// keeps its pace when devices fail or die, and when clients misbehave.

// transactions returns the transaction lines of a JSON log.
func transactions(t *testing.T, log string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for l := range strings.SplitSeq(strings.TrimSpace(log), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line is not JSON: %q", l)
		}
		if m["msg"] == "transaction" {
			out = append(out, m)
		}
	}
	return out
}

// TestRejectedNeverReachTheLine: function codes no device has and
// requests whose length or quantity the spec forbids are answered at
// once, never sent; user-defined codes still pass through.
func TestRejectedNeverReachTheLine(t *testing.T) {
	r := startRig(t, sim.Faults{}, "")
	c := dial(t, r.addr)
	tests := []struct {
		name string
		pdu  []byte
		want []byte
	}{
		{"function code 0", []byte{0x00, 0, 1}, []byte{0x80, 0x01}},
		{"function code 0x90", []byte{0x90, 0, 1}, []byte{0x90, 0x01}},
		{"function code 0xFF", []byte{0xFF}, []byte{0xFF, 0x01}},
		{"read 126 registers", append([]byte{0x03}, be16(0, 126)...), []byte{0x83, 0x03}},
		{"read 0 coils", append([]byte{0x01}, be16(0, 0)...), []byte{0x81, 0x03}},
		{"read registers, one byte short", []byte{0x03, 0, 0, 0}, []byte{0x83, 0x03}},
		{"write 2 registers, byte count 5", append(append([]byte{0x10}, be16(0, 2)...), 5, 1, 2, 3, 4, 5), []byte{0x90, 0x03}},
		{"write coil 0x1234", append([]byte{0x05}, be16(1, 0x1234)...), []byte{0x85, 0x03}},
	}
	for i, tt := range tests {
		if got := exchange(t, c, uint16(i+1), 1, tt.pdu); string(got) != string(tt.want) {
			t.Errorf("%s: % X, want % X", tt.name, got, tt.want)
		}
	}
	if n := r.dev.Stats().Requests; n != 0 {
		t.Fatalf("the line carried %d of the rejected requests", n)
	}
	// A user-defined function code passes: the device answers it (01).
	if got := exchange(t, c, 99, 1, []byte{0x41, 0x00, 0x01}); string(got) != "\xC1\x01" || r.dev.Stats().Requests != 1 {
		t.Fatalf("user-defined: % X, device saw %d", got, r.dev.Stats().Requests)
	}
	lines := transactions(t, r.log.String())
	if len(lines) != len(tests)+1 || lines[0]["outcome"] != "rejected" || lines[3]["exception"] != 3.0 {
		t.Fatalf("log: %v", lines)
	}
	if n := r.svc.Checks.Rejected(); n != uint64(len(tests)) {
		t.Fatalf("rejected counter %d", n)
	}
}

// TestDeadUnitIsolated: a unit unplugged while polled goes offline after
// offline_after failures: its requests are answered 0x0B at once, the
// line carries only a probe per probe_interval, the live units keep
// their pace, and the first answer to a probe brings it back.
func TestDeadUnitIsolated(t *testing.T) {
	r := startRig(t, sim.Faults{}, "offline_after = 2\nprobe_interval = \"300ms\"\n")
	dead := client(t, r.addr, 3)
	if _, err := dead.ReadHoldingRegisters(0, 1); err != nil {
		t.Fatal(err)
	}
	r.dev.Mute(3, true)
	for range 2 { // each waits out timeout and retry
		_, err := dead.ReadHoldingRegisters(0, 1)
		wantException(t, err, 0x0B)
	}
	if !r.svc.Offline.Offline(3) {
		t.Fatal("unit 3 not offline after two failed transactions")
	}
	seen := r.dev.Seen(3)
	// Poll the dead unit as fast as it answers, beside a live one.
	var live, deadPolls atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			start := time.Now()
			_, err := dead.ReadHoldingRegisters(0, 1)
			if exceptionCode(err) != 0x0B {
				t.Errorf("dead unit: %v", err)
				return
			}
			if time.Since(start) < 20*time.Millisecond {
				deadPolls.Add(1)
			}
		}
	})
	cl := client(t, r.addr, 1)
	deadline := time.Now().Add(700 * time.Millisecond)
	for time.Now().Before(deadline) {
		got, err := cl.ReadHoldingRegisters(5, 1)
		if err != nil || binary.BigEndian.Uint16(got) != registers.PatternHolding(1, 5) {
			t.Fatalf("live unit beside the dead one: % X %v", got, err)
		}
		live.Add(1)
	}
	close(stop)
	wg.Wait()
	probes := r.dev.Seen(3) - seen
	t.Logf("in 700 ms: %d answers from the live unit, %d instant 0x0B to the dead one, %d probes on the line", live.Load(), deadPolls.Load(), probes)
	// 300 ms, then 600 ms: one probe, perhaps two, one frame each (a unit
	// whose last transaction heard nothing gets no retry).
	if probes < 1 || probes > 2 {
		t.Fatalf("%d frames to the dead unit in 700 ms, want one or two probes", probes)
	}
	if deadPolls.Load() < 20 {
		t.Fatalf("only %d instant answers to the dead unit", deadPolls.Load())
	}
	// Plugged back in: the next probe's answer brings it online.
	r.dev.Mute(3, false)
	back := time.Now()
	for {
		got, err := dead.ReadHoldingRegisters(0, 1)
		if err == nil {
			if binary.BigEndian.Uint16(got) != registers.PatternHolding(3, 0) {
				t.Fatalf("back online: % X", got)
			}
			break
		}
		if time.Since(back) > 3*time.Second {
			t.Fatalf("unit 3 still offline %v after it came back: %v", time.Since(back), err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if s := r.svc.Offline.Stats(); s.WentOffline != 1 || s.CameBack != 1 || s.Answered == 0 {
		t.Fatalf("offline counters %+v", s)
	}
	log := r.log.String()
	if strings.Count(log, `"msg":"unit offline`) != 1 || strings.Count(log, `"msg":"unit back online"`) != 1 {
		t.Fatalf("want one line for each transition:\n%s", log)
	}
	if !strings.Contains(log, `"outcome":"offline"`) {
		t.Fatal("no transaction logged with outcome=offline")
	}
}

// TestQueuedForADeadUnit: clients whose requests to a unit wait in the
// line's queue when the unit dies do not hold the line for a timeout
// each: once the unit is offline, the requests still queued for it are
// answered 0x0B when their turn comes, without a frame. A unit that was
// never heard is found absent by one attempt, and the requests that came
// meanwhile wait for what it found: one frame in all.
func TestQueuedForADeadUnit(t *testing.T) {
	r := startRig(t, sim.Faults{}, "offline_after = 2\nprobe_interval = \"10s\"\n")
	const n = 10
	at := func(unit byte) {
		t.Helper()
		clients := make([]modbus.Client, n)
		for i := range clients {
			clients[i] = client(t, r.addr, unit)
		}
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i, c := range clients {
			wg.Go(func() {
				<-start
				_, err := c.ReadHoldingRegisters(uint16(100*i), 1) // none the same: shared reads do not join them
				wantException(t, err, 0x0B)
			})
		}
		close(start)
		wg.Wait()
	}
	outcomes := func() map[string]int {
		o := map[string]int{}
		for _, l := range transactions(t, r.log.String()) {
			o[l["outcome"].(string)]++
		}
		return o
	}
	// Unit 2 answers, then dies with ten requests queued for it: the
	// first transaction's two attempts, the second's one (the unit heard
	// nothing the last time), and then nothing: the unit is offline.
	if _, err := client(t, r.addr, 2).ReadHoldingRegisters(0, 1); err != nil {
		t.Fatal(err)
	}
	r.dev.Mute(2, true)
	before := r.dev.Seen(2)
	at(2)
	if seen := r.dev.Seen(2) - before; seen != 3 {
		t.Fatalf("%d frames to the dead unit for %d queued requests, want 3", seen, n)
	}
	if o := outcomes(); o["timeout"] != 2 || o["offline"] != n-2 {
		t.Fatalf("outcomes %v, want 2 timeouts and %d offline", o, n-2)
	}
	if s := r.svc.Offline.Stats(); s.WentOffline != 1 || s.Answered != n-2 {
		t.Fatalf("offline counters %+v", s)
	}
	// Unit 5 has no device: one frame, and every other request waits
	// for it, then gets 0x0B at once.
	at(5)
	if seen := r.dev.Seen(5); seen != 1 {
		t.Fatalf("%d frames to a unit never heard for %d requests at once, want 1", seen, n)
	}
	if o := outcomes(); o["timeout"] != 3 || o["offline"] != 2*n-3 {
		t.Fatalf("outcomes %v, want 3 timeouts and %d offline", o, 2*n-3)
	}
	if s := r.svc.Offline.Stats(); s.WentOffline != 2 {
		t.Fatalf("offline counters %+v", s)
	}
}

// TestBrokenAnswerRetriesAtOnce: an answer that arrives whole with a bad
// CRC means the device has finished talking: the retry goes out after
// t3.5 of silence, not after the timeout. With a 3 s timeout and 30 %
// of the answers corrupted, twenty reads would take half a minute if each
// corruption cost a timeout.
func TestBrokenAnswerRetriesAtOnce(t *testing.T) {
	// Eight retries: every read gets through (0.3^9 to fail one).
	r := startRig(t, sim.Faults{Corrupt: 0.3, Seed: 11}, "[[bus.device]]\nunit = 2\ntimeout = \"3s\"\nretries = 8\n")
	cl := client(t, r.addr, 2)
	start := time.Now()
	for i := range 20 {
		got, err := cl.ReadHoldingRegisters(uint16(10*i), 4)
		if err != nil || binary.BigEndian.Uint16(got) != registers.PatternHolding(2, 10*i) {
			t.Fatalf("read %d: % X %v\n%s", i, got, err, r.log.String())
		}
	}
	took := time.Since(start)
	st := r.svc.Lines()[0].Stats()
	t.Logf("20 reads, %d corrupted answers, in %v", st.CRCErrors, took)
	if st.CRCErrors == 0 {
		t.Fatal("no answer was corrupted: the test proves nothing")
	}
	if took > 3*time.Second {
		t.Fatalf("20 reads with %d corrupted answers took %v: a corruption cost a timeout", st.CRCErrors, took)
	}
}

// queueReaders keeps 40 clients reading from units 1..3 through the
// gateway at addr until the test ends, so that the line's queue stays
// full of plain reads.
func queueReaders(t *testing.T, addr string) {
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for k := range 40 {
		wg.Go(func() {
			h := modbus.NewTCPClientHandler(addr)
			h.SlaveId, h.Timeout = byte(1+k%3), 5*time.Second
			defer h.Close()
			cl := modbus.NewClient(h)
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := cl.ReadHoldingRegisters(uint16(k), 1); err != nil {
					t.Errorf("reader %d: %v", k, err)
					return
				}
			}
		})
	}
	t.Cleanup(func() { close(stop); wg.Wait() })
	time.Sleep(300 * time.Millisecond) // the queue fills
}

// goesFirst times first(i) and then plain reads, three times, with the
// queue full of plain reads: a plain read of a client that has just had
// one waits behind about 40 others (800 ms), first behind the one on the
// line (20 ms). (A client that was idle has had less than its share of
// the line and goes ahead of the busy ones: plain does two reads, and the
// second waits its turn.) A factor of 4 between them leaves room for a
// loaded machine.
func goesFirst(t *testing.T, what string, first func(i int), plain func(i int)) {
	t.Helper()
	for i := range 3 {
		start := time.Now()
		first(i)
		took := time.Since(start)
		start = time.Now()
		plain(i)
		read := time.Since(start)
		t.Logf("%s %v, plain read %v", what, took, read)
		if 4*took > read {
			t.Fatalf("%s took %v, a plain read %v: it did not go first", what, took, read)
		}
	}
}

// TestWritesGoFirst: with 40 clients' reads queued on a slow line (20 ms
// per answer, about 800 ms of queue), a write goes before them; a plain
// read waits its turn.
func TestWritesGoFirst(t *testing.T) {
	r := startRig(t, sim.Faults{Slow: 20 * time.Millisecond}, "queue_size = 100\n")
	queueReaders(t, r.addr)
	w, rd := client(t, r.addr, 2), client(t, r.addr, 2)
	goesFirst(t, "write", func(i int) {
		if _, err := w.WriteSingleRegister(uint16(100+i), 7); err != nil {
			t.Fatal(err)
		}
	}, func(i int) {
		for range 2 {
			if _, err := rd.ReadHoldingRegisters(uint16(100+i), 1); err != nil {
				t.Fatal(err)
			}
		}
	})
}

// TestPriorityClients: the reads of a client listed in priority_clients
// (127.0.0.2, a loopback address of its own) go first too.
func TestPriorityClients(t *testing.T) {
	r := startRigWith(t, sim.Faults{Slow: 20 * time.Millisecond}, "priority_clients = [\"127.0.0.2\"]\n", "queue_size = 100\n")
	queueReaders(t, r.addr)
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}
	c, err := d.Dial("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	plain := client(t, r.addr, 1)
	goesFirst(t, "priority client's read", func(i int) {
		got := exchange(t, c, uint16(i+1), 1, append([]byte{0x03}, be16(200+i, 1)...))
		if string(got) != string(append([]byte{0x03, 2}, be16(int(registers.PatternHolding(1, 200+i)))...)) {
			t.Fatalf("priority client: % X", got)
		}
	}, func(i int) {
		for range 2 {
			if _, err := plain.ReadHoldingRegisters(uint16(200+i), 1); err != nil {
				t.Fatal(err)
			}
		}
	})
}
