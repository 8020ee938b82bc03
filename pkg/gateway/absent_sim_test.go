package gateway_test

import (
	"context"
	"encoding/binary"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/mcpgw/mcpgw/pkg/chain/offline"
	"github.com/mcpgw/mcpgw/pkg/gateway"
	"github.com/mcpgw/mcpgw/pkg/pdu"
	"github.com/mcpgw/mcpgw/pkg/registers"
	"github.com/mcpgw/mcpgw/pkg/request"
	"github.com/mcpgw/mcpgw/pkg/rtu"
)

// The absence simulation runs the offline rule, the router and a serial
// line in virtual time (testing/synctest) against a simulated multi-drop
// line: a few live units that drop answers now and then, many absent
// ones, and one that is switched off and on again. Clients poll the live
// units, a scanner goes through every unit, and each request reads an
// address of its own, so that an answer handed to the wrong request
// shows. It checks that no request gets another's answer, that live
// units are never judged absent for long, that absent ones cost the line
// no more silence than the budget allows, and that a unit that comes
// back is online again within the probe interval and the budget's
// spacing.

// simPort is one end of an in-memory serial line: what the other end
// writes arrives at once; Read returns 0, nil when its timeout passes.
type simPort struct {
	mu      sync.Mutex
	in      []byte
	notify  chan struct{}
	timeout time.Duration
	peer    *simPort
}

func simPorts() (a, b *simPort) {
	a = &simPort{notify: make(chan struct{}, 1)}
	b = &simPort{notify: make(chan struct{}, 1), peer: a}
	a.peer = b
	return a, b
}

func (p *simPort) Write(b []byte) (int, error) {
	q := p.peer
	q.mu.Lock()
	q.in = append(q.in, b...)
	q.mu.Unlock()
	select {
	case q.notify <- struct{}{}:
	default:
	}
	return len(b), nil
}

func (p *simPort) Read(b []byte) (int, error) {
	var timer *time.Timer
	for {
		p.mu.Lock()
		if len(p.in) > 0 {
			n := copy(b, p.in)
			p.in = p.in[:copy(p.in, p.in[n:])]
			p.mu.Unlock()
			if timer != nil {
				timer.Stop()
			}
			return n, nil
		}
		p.mu.Unlock()
		if p.timeout <= 0 {
			return 0, nil
		}
		if timer == nil {
			timer = time.NewTimer(p.timeout)
		}
		select {
		case <-p.notify:
		case <-timer.C:
			return 0, nil
		}
	}
}

func (p *simPort) SetReadTimeout(t time.Duration) error { p.timeout = t; return nil }
func (p *simPort) ResetInputBuffer() error {
	p.mu.Lock()
	p.in = p.in[:0]
	p.mu.Unlock()
	return nil
}
func (p *simPort) Close() error { return nil }

// simDevices answers on port for the units that are present: each answer
// after 2 ms, dropped with probability drop.
type simDevices struct {
	port    *simPort
	models  map[byte]*registers.Model
	present func(unit byte, now time.Time) bool
	drop    float64
	rnd     *rand.Rand
	frames  [256]atomic.Int64 // requests seen per unit
	watch   byte              // the unit whose requests are timed in at
	mu      sync.Mutex
	at      []time.Time
}

func (d *simDevices) run(ctx context.Context) {
	rtu.ReadRequests(ctx, d.port, time.Millisecond, func(f []byte, _ time.Time) error {
		unit := f[0]
		d.frames[unit].Add(1)
		if unit == d.watch {
			d.mu.Lock()
			d.at = append(d.at, time.Now())
			d.mu.Unlock()
		}
		m := d.models[unit]
		if m == nil || !d.present(unit, time.Now()) || d.rnd.Float64() < d.drop {
			return nil
		}
		time.Sleep(2 * time.Millisecond)
		d.port.Write(rtu.AppendADU(nil, unit, m.Handle(f[1:len(f)-2], nil)))
		return nil
	}, func([]byte, error) {})
}

// TestSimulateAbsence: see above.
func TestSimulateAbsence(t *testing.T) {
	const (
		timeout  = 100 * time.Millisecond
		probe    = 5 * time.Second
		share    = 0.05
		run      = 3 * time.Minute
		comeback = byte(30)
	)
	live := []byte{1, 2, 3}
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		start := time.Now()
		off, on := start.Add(20*time.Second), start.Add(90*time.Second) // unit 30's power
		master, dev := simPorts()
		models := map[byte]*registers.Model{}
		for _, u := range append(live, comeback) {
			models[u] = registers.New(1000)
			models[u].Pattern(u)
		}
		devices := &simDevices{port: dev, models: models, drop: 0.05, rnd: rand.New(rand.NewPCG(1, 2)), watch: comeback,
			present: func(u byte, now time.Time) bool { return u != comeback || now.Before(off) || !now.Before(on) }}
		bus := rtu.NewBus(rtu.Config{Name: "sim", Timeout: timeout, Retries: 1, ProbeShare: share,
			Open: func() (rtu.Port, error) { return master, nil }})
		var wg sync.WaitGroup
		wg.Go(func() { bus.Run(ctx) })
		wg.Go(func() { devices.run(ctx) })
		g := gateway.New()
		var routes gateway.Routes
		rules := map[byte]offline.Rule{}
		for u := byte(1); u <= 40; u++ {
			routes.Add(u, gateway.Route{Line: bus, Retries: -1})
			rules[u] = offline.Rule{Line: "sim", After: 3, Probe: probe}
		}
		g.SetRoutes(&routes)
		h := offline.New(slog.New(slog.DiscardHandler))
		h.Middleware(g)
		h.SetRules(rules)

		var wrong, served atomic.Int64
		var conn atomic.Uint64
		ask := func(c uint64, unit byte, addr uint16) ([]byte, request.Outcome) {
			tr := &request.Request{Unit: unit, PDU: []byte{pdu.ReadHoldingRegisters, byte(addr >> 8), byte(addr), 0, 2}, ConnID: c, Client: "sim"}
			out := h.ServeModbus(ctx, tr, nil)
			if out[0] == pdu.ReadHoldingRegisters {
				served.Add(1)
				if v := binary.BigEndian.Uint16(out[2:]); v != registers.PatternHolding(unit, int(addr)) {
					wrong.Add(1)
					t.Errorf("unit %d address %d: WRONG ANSWER %d", unit, addr, v)
				}
			}
			return out, tr.Outcome
		}
		// Live units' state over the run: when each was judged offline.
		var mu sync.Mutex
		offlineSince := map[byte]time.Time{}
		longest := map[byte]time.Duration{}
		var offAt time.Time // when unit 30, switched off, was first judged offline
		watch := func() {
			now := time.Now()
			mu.Lock()
			defer mu.Unlock()
			for _, u := range append(live, comeback) {
				st, _ := h.State(u)
				if u == comeback && st == offline.Offline && offAt.IsZero() && !now.Before(off) {
					offAt = now
				}
				switch {
				case st == offline.Offline && offlineSince[u].IsZero():
					offlineSince[u] = now
				case st != offline.Offline && !offlineSince[u].IsZero():
					longest[u] = max(longest[u], now.Sub(offlineSince[u]))
					offlineSince[u] = time.Time{}
				}
			}
		}
		// Four clients poll the live units; a scanner goes through 1-40;
		// a client polls unit 30 all along.
		var back time.Time // when unit 30 first answered after it came back
		for k := range 4 {
			c := conn.Add(1)
			wg.Go(func() {
				for i := 0; ctx.Err() == nil; i++ {
					unit := live[(k+i)%len(live)]
					ask(c, unit, uint16((k*97+i*13)%900))
					watch()
				}
			})
		}
		wg.Go(func() {
			c := conn.Add(1)
			for i := 0; ctx.Err() == nil; i++ {
				ask(c, byte(1+i%40), uint16(i%900))
				time.Sleep(10 * time.Millisecond) // the server's spacing of refusals
			}
		})
		wg.Go(func() {
			c := conn.Add(1)
			for i := 0; ctx.Err() == nil; i++ {
				out, _ := ask(c, comeback, uint16(i%900))
				if out[0] == pdu.ReadHoldingRegisters && !time.Now().Before(on) && back.IsZero() {
					back = time.Now()
				}
				time.Sleep(50 * time.Millisecond)
			}
		})
		time.Sleep(run)
		cancel()
		wg.Wait()
		watch()

		if wrong.Load() > 0 {
			t.Fatalf("%d wrong answers", wrong.Load())
		}
		for _, u := range live {
			if d := longest[u]; d > 2*probe {
				t.Errorf("live unit %d was judged offline for %v", u, d)
			}
		}
		// Unit 30 while switched off: one probe per probe interval at
		// most, once it is judged offline (its client asks every 50 ms;
		// until then its failing transactions take two attempts each).
		// Switched on: back at the first probe that reaches it, which
		// comes when the budget has room; the scanner's 36 absent units
		// contend for the same room, so only that it comes is certain.
		// Once a probe has found it (the scanner's or its client's), its
		// client's next request is answered: at most the client's 50 ms
		// spacing and one turn of each of the six clients later, a turn
		// being at most two attempts.
		var firstOn time.Time
		var probes []time.Duration
		for i, at := range devices.at {
			switch {
			case !at.Before(on):
				if firstOn.IsZero() {
					firstOn = at
				}
			case !offAt.IsZero() && at.After(offAt) && i > 0 && devices.at[i-1].After(offAt):
				probes = append(probes, at.Sub(devices.at[i-1]))
			}
		}
		for _, gap := range probes {
			if gap < probe {
				t.Errorf("unit %d switched off was probed %v after its last probe, before the probe interval %v", comeback, gap, probe)
			}
		}
		if offAt.IsZero() {
			t.Errorf("unit %d switched off at %v was never judged offline", comeback, off.Sub(start))
		} else if len(probes) == 0 {
			t.Errorf("unit %d was not probed while switched off", comeback)
		}
		switch {
		case back.IsZero():
			t.Errorf("unit %d switched on at %v never answered again", comeback, on.Sub(start))
		case firstOn.IsZero() || back.Sub(firstOn) > 50*time.Millisecond+6*2*timeout:
			t.Errorf("unit %d: first request after it was switched on at %v, its client's first answer at %v; want one round of the clients' turns apart", comeback, firstOn.Sub(start), back.Sub(start))
		}
		// The silence absent units cost: each frame to one of them is a
		// silence of twice the timeout; at most the budget's share of the
		// run once every unit has been asked (the scanner's first pass,
		// free or not), and one more.
		var absent int64
		for u := byte(4); u <= 40; u++ {
			if u != comeback {
				absent += devices.frames[u].Load()
			}
		}
		spent := time.Duration(absent) * 2 * timeout
		allowed := time.Duration(share*float64(run)) + 36*2*timeout
		t.Logf("%v: %d answers served; %d frames to absent units (%v of silence, %v allowed); unit %d back %v after it was switched on (%d probes while off); live units' longest offline %v",
			run, served.Load(), absent, spent, allowed, comeback, back.Sub(on), len(probes), longest)
		if spent > allowed {
			t.Errorf("absent units cost %v of silence, more than %v", spent, allowed)
		}
		if served.Load() < 1000 {
			t.Errorf("only %d answers served", served.Load())
		}
	})
}
