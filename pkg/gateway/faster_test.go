package gateway_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/goburrow/modbus"

	"github.com/mcpgw/mcpgw/pkg/pdu"
	"github.com/mcpgw/mcpgw/pkg/registers"
	"github.com/mcpgw/mcpgw/pkg/tools/sim"
)

// history is what a device returned: for each unit and register, every
// value a read returned and when. The device's values change on every
// read (each register it reads goes up by one first), so a value names
// the read it came from.
type history struct {
	mu   sync.Mutex
	seen map[[2]int]map[uint16]time.Time // {unit, address} → value → when the device read it
}

func (h *history) beforeAnswer(unit byte, req []byte, m *registers.Model) {
	fc, addr, qty, ok := pdu.ParseRead(req)
	if !ok || fc != pdu.ReadHoldingRegisters {
		return
	}
	now := time.Now()
	m.Lock()
	defer m.Unlock()
	h.mu.Lock()
	defer h.mu.Unlock()
	for a := int(addr); a < int(addr)+int(qty) && a < len(m.Holding); a++ {
		m.Holding[a]++
		k := [2]int{int(unit), a}
		if h.seen[k] == nil {
			h.seen[k] = make(map[uint16]time.Time)
		}
		h.seen[k][m.Holding[a]] = now
	}
}

// when returns when the device returned v for unit's register a.
func (h *history) when(unit byte, a int, v uint16) (time.Time, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	t, ok := h.seen[[2]int{int(unit), a}][v]
	return t, ok
}

// TestFasterThanTheWireIsRight: six independent clients (goburrow/modbus)
// read overlapping blocks of two units through shared reads, the cache
// (unit 1) and agent mode (unit 2), while they write to unit 1 and read
// their writes back, and while unit 2 goes silent and comes back. Every
// value served must be one the device returned for that address, no
// older than the unit's max age plus one transaction; a read sent after
// a write was answered must come from after it; and the line must have
// carried fewer reads than the clients made.
func TestFasterThanTheWireIsRight(t *testing.T) {
	h := &history{seen: make(map[[2]int]map[uint16]time.Time)}
	dev := &sim.Line{Units: sim.NewUnits([]byte{1, 2}, 100), BeforeAnswer: h.beforeAnswer}
	path := onPty(t, dev)
	const (
		maxAge   = 200 * time.Millisecond // unit 1's cache_max_age
		interval = 100 * time.Millisecond // unit 2's poll
		timeout  = 100 * time.Millisecond
		slack    = 100 * time.Millisecond // one transaction, and scheduling on a busy machine
	)
	logs := &syncBuffer{}
	svc, addr := startService(t, fmt.Sprintf(`
[server]
listen = "127.0.0.1:0"
[[bus]]
name = "l1"
port = %q
parity = "N"
timeout = "100ms"
retries = 0
units = [1, 2]
offline_after = 2
probe_interval = "200ms"
probe_share = 0.5 # a probe every probe_interval while other units are polled, in this short test
[[bus.device]]
unit = 1
cache_max_age = "200ms"
[[bus.poll]]
unit = 2
function = 3
address = 0
count = 40
interval = "100ms"
`, path), slog.New(slog.NewJSONHandler(logs, nil)))
	ages := map[byte]time.Duration{1: maxAge, 2: interval + 10*time.Millisecond} // a transaction on this line: under 10 ms

	var (
		mu          sync.Mutex
		muted       bool
		mutedUntil  time.Time // 0x0B from unit 2 is right until a while after this
		reads, outs int
		back        bool // unit 2 answered after it came back
	)
	stopClients := make(chan struct{})
	var wg sync.WaitGroup
	for c := range 6 {
		handler := modbus.NewTCPClientHandler(addr)
		handler.Timeout = 5 * time.Second
		if err := handler.Connect(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { handler.Close() })
		client := modbus.NewClient(handler)
		rnd := rand.New(rand.NewPCG(uint64(c), 9))
		wg.Go(func() {
			written := 0
			for {
				select {
				case <-stopClients:
					return
				default:
				}
				unit := byte(1 + rnd.IntN(2))
				handler.SlaveId = unit
				// Blocks that overlap: four fixed ones many clients share,
				// and random sub-ranges.
				a, n := 10*rnd.IntN(4), 10
				if rnd.IntN(2) == 0 {
					a, n = rnd.IntN(30), 1+rnd.IntN(10)
				}
				var writeAt time.Time
				if unit == 1 && c%2 == 0 && rnd.IntN(4) == 0 {
					// Write a value no read returns, then read it back: the
					// answer must come from a device read after the write.
					written++
					v := uint16(40000 + 1000*c + written%1000)
					writeAt = time.Now()
					if _, err := client.WriteSingleRegister(uint16(a), v); err != nil {
						t.Errorf("client %d: write: %v", c, err)
						return
					}
				}
				sent := time.Now()
				got, err := client.ReadHoldingRegisters(uint16(a), uint16(n))
				recv := time.Now()
				mu.Lock()
				reads++
				if unit == 2 && err == nil && !muted && !mutedUntil.IsZero() {
					back = true
				}
				late := !mutedUntil.IsZero() && (muted || recv.Before(mutedUntil.Add(2*time.Second)))
				mu.Unlock()
				if err != nil {
					var me *modbus.ModbusError
					if unit == 2 && late && errors.As(err, &me) && me.ExceptionCode == 0x0B {
						continue
					}
					t.Errorf("client %d: read unit %d %d+%d: %v", c, unit, a, n, err)
					return
				}
				for i := range n {
					v := binary.BigEndian.Uint16(got[2*i:])
					when, ok := h.when(unit, a+i, v)
					switch {
					case !ok:
						t.Errorf("client %d: unit %d register %d = %d: the device never returned that value there", c, unit, a+i, v)
						return
					case when.After(recv):
						t.Errorf("client %d: unit %d register %d: a value from after the answer", c, unit, a+i)
						return
					case sent.Sub(when) > ages[unit]+slack:
						t.Errorf("client %d: unit %d register %d = %d: %v old when asked for, max age %v", c, unit, a+i, v, sent.Sub(when), ages[unit])
						return
					case !writeAt.IsZero() && i == 0 && when.Before(writeAt):
						t.Errorf("client %d: unit 1 register %d read back from before the write", c, a)
						return
					}
				}
				mu.Lock()
				outs += n
				mu.Unlock()
			}
		})
	}
	time.Sleep(700 * time.Millisecond)
	mu.Lock()
	muted, mutedUntil = true, time.Now()
	mu.Unlock()
	dev.Mute(2, true)
	time.Sleep(800 * time.Millisecond)
	dev.Mute(2, false)
	mu.Lock()
	muted, mutedUntil = false, time.Now()
	mu.Unlock()
	time.Sleep(1500 * time.Millisecond)
	close(stopClients)
	wg.Wait()

	line := svc.Lines()[0].Stats()
	t.Logf("%d client reads (%d values); the line carried %d transactions; %d answered from the cache, %d shared",
		reads, outs, line.Requests, svc.Cache.Hits(), svc.Shared.Joined())
	if !back {
		t.Error("unit 2 never answered after it came back")
	}
	if svc.Cache.Hits() == 0 || svc.Shared.Joined() == 0 || int(line.Requests) >= reads {
		t.Errorf("neither cache nor shared reads saved the line anything")
	}
}
