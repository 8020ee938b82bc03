package rtu_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mcpgw/mcpgw/pkg/pdu"
	"github.com/mcpgw/mcpgw/pkg/registers"
	"github.com/mcpgw/mcpgw/pkg/rtu"
	"github.com/mcpgw/mcpgw/pkg/tools/sim"
	"github.com/mcpgw/mcpgw/pkg/wire/serialport"
)

// line starts a bus on one end of a virtual line and simulated units on
// the other.
func line(t *testing.T, cfg rtu.Config, faults sim.Faults, units ...byte) (*rtu.Bus, *sim.Line) {
	t.Helper()
	dev := &sim.Line{Units: sim.NewUnits(units, 1000), Faults: faults}
	bus := handLine(t, cfg, func(ctx context.Context, p serialport.Port) {
		dev.Port = p
		dev.Serve(ctx)
	})
	return bus, dev
}

// handLine starts a bus on a virtual line whose far end device drives
// (by hand, for what the simulator does not do) until ctx ends or the
// line closes.
func handLine(t *testing.T, cfg rtu.Config, device func(ctx context.Context, dev serialport.Port)) *rtu.Bus {
	t.Helper()
	p, err := serialport.NewPty()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { device(ctx, p.Device) })
	cfg.Open = func() (rtu.Port, error) {
		return serialport.Open(p.Path, serialport.Settings{Baud: 19200, DataBits: 8, Parity: 'N', StopBits: 1})
	}
	bus := rtu.NewBus(cfg)
	wg.Go(func() { bus.Run(ctx) })
	t.Cleanup(func() { cancel(); p.Close(); wg.Wait() })
	for !bus.Up() {
		time.Sleep(time.Millisecond)
	}
	return bus
}

// answerEach reads k requests on dev and answers each from m through
// write, which puts the answer on the line as the test pleases.
func answerEach(dev serialport.Port, m *registers.Model, k int, write func(i int, answer []byte)) {
	buf := make([]byte, 256)
	dev.SetReadTimeout(5 * time.Second)
	for i := range k {
		n, _ := dev.Read(buf)
		if n < 4 {
			return
		}
		write(i, rtu.AppendADU(nil, buf[0], m.Handle(buf[1:n-2], nil)))
	}
}

func readHolding(addr, qty uint16) []byte {
	return binary.BigEndian.AppendUint16(binary.BigEndian.AppendUint16([]byte{pdu.ReadHoldingRegisters}, addr), qty)
}

func wantHolding(unit byte, addr, qty int) []byte {
	want := []byte{pdu.ReadHoldingRegisters, byte(2 * qty)}
	for i := range qty {
		want = binary.BigEndian.AppendUint16(want, registers.PatternHolding(unit, addr+i))
	}
	return want
}

func TestBusReadsAndExceptions(t *testing.T) {
	bus, _ := line(t, rtu.Config{Name: "t", Timeout: 200 * time.Millisecond, Retries: 2}, sim.Faults{}, 1, 2)
	ctx := context.Background()
	r := &rtu.Request{Unit: 2, PDU: readHolding(10, 125), Retries: -1}
	bus.Do(ctx, r)
	if r.Outcome != rtu.OK || !bytes.Equal(r.Resp, wantHolding(2, 10, 125)) {
		t.Fatalf("read: %v %v % X", r.Outcome, r.Err, r.Resp)
	}
	// A device's exception is an answer: one attempt, passed on unchanged.
	r.Unit, r.PDU = 1, readHolding(999, 2)
	bus.Do(ctx, r)
	if r.Outcome != rtu.OK || r.Attempts != 1 || !bytes.Equal(r.Resp, []byte{0x83, 0x02}) {
		t.Fatalf("exception: %v attempts=%d % X", r.Outcome, r.Attempts, r.Resp)
	}
	// Nobody at unit 9: every attempt times out.
	r.Unit, r.PDU, r.Timeout = 9, readHolding(0, 1), 30*time.Millisecond
	bus.Do(ctx, r)
	if r.Outcome != rtu.Timeout || r.Attempts != 3 || !errors.Is(r.Err, rtu.ErrNoAnswer) {
		t.Fatalf("silent unit: %v attempts=%d err=%v", r.Outcome, r.Attempts, r.Err)
	}
}

func TestBusBroadcast(t *testing.T) {
	bus, dev := line(t, rtu.Config{BroadcastDelay: 10 * time.Millisecond}, sim.Faults{}, 1, 2)
	r := &rtu.Request{Unit: 0, PDU: []byte{pdu.WriteSingleRegister, 0, 5, 0xAB, 0xCD}, Retries: -1}
	bus.Do(context.Background(), r)
	if r.Outcome != rtu.Sent || r.Attempts != 1 {
		t.Fatalf("broadcast: %v attempts=%d", r.Outcome, r.Attempts)
	}
	for _, u := range []byte{1, 2} {
		r := &rtu.Request{Unit: u, PDU: readHolding(5, 1), Retries: -1}
		bus.Do(context.Background(), r)
		if !bytes.Equal(r.Resp, []byte{3, 2, 0xAB, 0xCD}) {
			t.Fatalf("unit %d after broadcast: % X", u, r.Resp)
		}
	}
	if s := dev.Stats(); s.Broadcasts != 1 {
		t.Fatalf("device saw %d broadcasts", s.Broadcasts)
	}
}

// TestBusFaultyLine: with half the answers corrupted or noisy, retries get
// every request a right answer or a timeout, never a wrong one.
func TestBusFaultyLine(t *testing.T) {
	for _, f := range []sim.Faults{
		{Corrupt: 0.4, Seed: 1},
		{Noise: 0.5, Seed: 2},
		{Drop: 0.3, Seed: 3},
		{Echo: true, Seed: 4},
	} {
		bus, dev := line(t, rtu.Config{Timeout: 50 * time.Millisecond, Retries: 4, Echo: f.Echo}, f, 1, 2, 3)
		ok := 0
		for i := range 60 {
			unit, addr := byte(1+i%3), uint16(i*7%800)
			r := &rtu.Request{Unit: unit, PDU: readHolding(addr, 10), Retries: -1}
			bus.Do(context.Background(), r)
			if r.Outcome == rtu.OK {
				ok++
				if want := wantHolding(unit, int(addr), 10); !bytes.Equal(r.Resp, want) {
					t.Fatalf("%+v: wrong answer % X, want % X", f, r.Resp, want)
				}
			}
		}
		if ok < 50 {
			t.Errorf("%+v: only %d of 60 answered; device %+v", f, ok, dev.Stats())
		}
	}
}

// TestBusUnpredictableLength: a user-defined function code's answer has no
// length field; the bus ends it at silence and passes it on whole.
func TestBusUnpredictableLength(t *testing.T) {
	answer := []byte{0x41, 0xDE, 0xAD, 0xBE, 0xEF, 0x00, 0x01}
	bus := handLine(t, rtu.Config{Timeout: time.Second}, func(_ context.Context, dev serialport.Port) {
		buf := make([]byte, 256)
		dev.SetReadTimeout(2 * time.Second)
		if n, _ := dev.Read(buf); n > 0 {
			dev.Write(rtu.AppendADU(nil, buf[0], answer))
		}
	})
	r := &rtu.Request{Unit: 7, PDU: []byte{0x41, 0x01}, Retries: 0}
	bus.Do(context.Background(), r)
	if r.Outcome != rtu.OK || !bytes.Equal(r.Resp, answer) {
		t.Fatalf("%v %v % X", r.Outcome, r.Err, r.Resp)
	}
}

func TestBusLineDown(t *testing.T) {
	bus := rtu.NewBus(rtu.Config{Open: func() (rtu.Port, error) {
		return serialport.Open("/dev/does-not-exist", serialport.Settings{Baud: 9600, DataBits: 8, Parity: 'N', StopBits: 1})
	}})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go bus.Run(ctx)
	r := &rtu.Request{Unit: 1, PDU: readHolding(0, 1)}
	bus.Do(ctx, r)
	if r.Outcome != rtu.LineDown {
		t.Fatalf("missing port: %v", r.Outcome)
	}
}

// TestBusRetire: a reload replaces a line while clients poll it. The old
// bus finishes what it has on the wire and hands its queue over; the new
// one opens the port only once the old one has closed it; no request
// fails and the counters carry on. A removed line answers LineDown.
func TestBusRetire(t *testing.T) {
	p, err := serialport.NewPty()
	if err != nil {
		t.Fatal(err)
	}
	dev := &sim.Line{Units: sim.NewUnits([]byte{1, 2}, 1000)}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); p.Close(); wg.Wait() })
	dev.Port = p.Device
	wg.Go(func() { dev.Serve(ctx) })
	var open atomic.Int32 // ports open now
	start := func(replaces *rtu.Bus) *rtu.Bus {
		b := rtu.NewBus(rtu.Config{Name: "l", Timeout: 300 * time.Millisecond, Replaces: replaces,
			Open: func() (rtu.Port, error) {
				if open.Add(1) != 1 {
					t.Error("two buses have the port open")
				}
				port, err := serialport.Open(p.Path, serialport.Settings{Baud: 19200, DataBits: 8, Parity: 'N', StopBits: 1})
				if err != nil {
					open.Add(-1)
					return nil, err
				}
				return closeCounted{port, &open}, nil
			}})
		wg.Go(func() { b.Run(ctx) })
		return b
	}
	var cur atomic.Pointer[rtu.Bus]
	cur.Store(start(nil))
	for !cur.Load().Up() {
		time.Sleep(time.Millisecond)
	}
	var done atomic.Int64
	stop := make(chan struct{})
	var clients sync.WaitGroup
	for c := range 8 {
		clients.Go(func() {
			r := &rtu.Request{Unit: byte(1 + c%2), PDU: readHolding(uint16(c), 2), Retries: -1}
			for {
				select {
				case <-stop:
					return
				default:
				}
				cur.Load().Do(ctx, r)
				if r.Outcome != rtu.OK || !bytes.Equal(r.Resp, wantHolding(byte(1+c%2), c, 2)) {
					t.Errorf("client %d: %v %v % X", c, r.Outcome, r.Err, r.Resp)
					return
				}
				done.Add(1)
			}
		})
	}
	var old *rtu.Bus
	for range 5 { // five reloads, each while the clients poll
		time.Sleep(50 * time.Millisecond)
		old = cur.Load()
		next := start(old)
		cur.Store(next) // the router's routes
		old.Retire(next)
		<-old.Closed()
	}
	time.Sleep(50 * time.Millisecond)
	close(stop)
	clients.Wait()
	last := cur.Load()
	if st := last.Stats(); done.Load() < 50 || st.Requests < uint64(done.Load()) {
		t.Fatalf("%d transactions; the last bus counts %d requests: the counters did not carry on", done.Load(), st.Requests)
	}
	// A request that still holds a retired bus goes to its successor.
	r := &rtu.Request{Unit: 1, PDU: readHolding(0, 1), Retries: -1}
	old.Do(ctx, r)
	if r.Outcome != rtu.OK {
		t.Fatalf("through a retired bus: %v", r.Outcome)
	}
	// Removed: no successor.
	last.Retire(nil)
	<-last.Closed()
	last.Do(ctx, r)
	if r.Outcome != rtu.LineDown || open.Load() != 0 {
		t.Fatalf("a removed line: %v, %d ports open", r.Outcome, open.Load())
	}
}

// closeCounted counts a port's close.
type closeCounted struct {
	rtu.Port
	open *atomic.Int32
}

func (c closeCounted) Close() error {
	c.open.Add(-1)
	return c.Port.Close()
}

func TestCharGap(t *testing.T) {
	if got := rtu.CharGap(time.Duration(11) * time.Second / time.Duration(300)); got.Round(time.Microsecond) != 55*time.Millisecond {
		t.Errorf("300 baud: t1.5 = %v, want 55 ms", got)
	}
	if got := rtu.CharGap(time.Duration(11) * time.Second / time.Duration(19200)); got != rtu.MinCharGap {
		t.Errorf("19200 baud: %v, want the floor", got)
	}
}

// TestBusGapInsideFrame: a device sends half an answer, pauses longer than
// the char gap, then the rest: the halves are not one frame. The retry's answer,
// sent whole, is taken.
func TestBusGapInsideFrame(t *testing.T) {
	answer := rtu.AppendADU(nil, 1, []byte{0x03, 0x04, 0x00, 0x01, 0x00, 0x02})
	bus := handLine(t, rtu.Config{Timeout: 200 * time.Millisecond, Retries: 1}, func(_ context.Context, dev serialport.Port) {
		buf := make([]byte, 256)
		dev.SetReadTimeout(5 * time.Second)
		for i := 0; i < 2; i++ {
			if n, _ := dev.Read(buf); n == 0 {
				return
			}
			if i == 0 {
				dev.Write(answer[:4])
				time.Sleep(40 * time.Millisecond)
				dev.Write(answer[4:])
			} else {
				dev.Write(answer)
			}
		}
	})
	r := &rtu.Request{Unit: 1, PDU: readHolding(0, 2), Retries: -1}
	bus.Do(context.Background(), r)
	if r.Outcome != rtu.OK || r.Attempts != 2 || !bytes.Equal(r.Resp, answer[1:len(answer)-2]) {
		t.Fatalf("%v attempts=%d % X", r.Outcome, r.Attempts, r.Resp)
	}
	if s := bus.Stats(); s.ShortFrame != 1 && s.CRCErrors == 0 {
		t.Fatalf("the split frame was not counted: %+v", s)
	}
}

func TestFrameGap(t *testing.T) {
	tests := []struct {
		baud, bits int
		want       time.Duration
	}{
		{9600, 11, 4010416 * time.Nanosecond},
		{19200, 11, 2005208 * time.Nanosecond},
		{38400, 11, 1750 * time.Microsecond},
		{115200, 10, 1750 * time.Microsecond},
	}
	for _, tt := range tests {
		if got := rtu.FrameGap(time.Duration(tt.bits) * time.Second / time.Duration(tt.baud)); got.Round(time.Microsecond) != tt.want.Round(time.Microsecond) {
			t.Errorf("%d baud: t3.5 = %v, want %v", tt.baud, got, tt.want)
		}
	}
}

// TestBusStaleAnswerBeforeRequest: a device repeats its answer unasked
// after each transaction. The repeat fits the next request's unit,
// function and byte count, so only draining the line before sending tells
// it apart: each request must get its own answer, and every repeat must be
// counted, not silently lost; the log says so once a minute at most, as a
// line that does this does it on every transaction.
func TestBusStaleAnswerBeforeRequest(t *testing.T) {
	m := registers.New(100)
	m.Pattern(1)
	var logBuf bytes.Buffer // written by the bus before each Do returns
	cfg := rtu.Config{Timeout: 300 * time.Millisecond, Log: slog.New(slog.NewTextHandler(&logBuf, nil))}
	bus := handLine(t, cfg, func(_ context.Context, dev serialport.Port) {
		answerEach(dev, m, 3, func(i int, answer []byte) {
			dev.Write(answer)
			if i < 2 {
				time.Sleep(10 * time.Millisecond)
				dev.Write(answer) // unasked, between transactions
			}
		})
	})
	ctx := context.Background()
	r := &rtu.Request{Unit: 1, Retries: 0}
	for i, addr := range []int{0, 50, 20} {
		if i > 0 {
			time.Sleep(40 * time.Millisecond) // the repeat is waiting in the input
		}
		r.PDU = readHolding(uint16(addr), 4)
		bus.Do(ctx, r)
		if want := wantHolding(1, addr, 4); r.Outcome != rtu.OK || !bytes.Equal(r.Resp, want) {
			t.Fatalf("request %d: %v %v % X, want % X", i+1, r.Outcome, r.Err, r.Resp, want)
		}
	}
	repeat := len(rtu.AppendADU(nil, 1, wantHolding(1, 0, 4)))
	if got := bus.Stats().LateBytes; got != uint64(2*repeat) {
		t.Fatalf("late bytes %d, want the %d of two repeats", got, 2*repeat)
	}
	// Logged the first time; the second, within the minute, only counted.
	log := logBuf.String()
	if got := strings.Count(log, "discarded stray bytes before a request"); got != 1 || !strings.Contains(log, fmt.Sprintf("bytes=%d", repeat)) {
		t.Fatalf("%d stray-bytes lines, want 1 with bytes=%d:\n%s", got, repeat, log)
	}
}

// TestBusLateAnswerTrickle: an answer that comes after its attempt gave
// up, a few bytes at a time, is drained before the next request and
// logged once, whole, however many reads it took.
func TestBusLateAnswerTrickle(t *testing.T) {
	m := registers.New(100)
	m.Pattern(1)
	// The bus logs from its goroutine before each Do returns, and not
	// between the second Do and the end of the test: no lock needed.
	var logBuf bytes.Buffer
	cfg := rtu.Config{Timeout: 30 * time.Millisecond, Log: slog.New(slog.NewTextHandler(&logBuf, nil))}
	bus := handLine(t, cfg, func(_ context.Context, dev serialport.Port) {
		answerEach(dev, m, 2, func(i int, answer []byte) {
			if i == 1 {
				dev.Write(answer)
				return
			}
			time.Sleep(45 * time.Millisecond) // the attempt gave up at 30 ms
			for k := 0; k < len(answer); k += 4 {
				dev.Write(answer[k:min(k+4, len(answer))])
				time.Sleep(5 * time.Millisecond)
			}
		})
	})
	ctx := context.Background()
	r := &rtu.Request{Unit: 1, PDU: readHolding(0, 4), Retries: 0}
	bus.Do(ctx, r)
	if r.Outcome != rtu.Timeout {
		t.Fatalf("first: %v, want a timeout", r.Outcome)
	}
	r.PDU = readHolding(50, 4)
	bus.Do(ctx, r)
	if r.Outcome != rtu.OK || !bytes.Equal(r.Resp, wantHolding(1, 50, 4)) {
		t.Fatalf("second: %v %v % X", r.Outcome, r.Err, r.Resp)
	}
	late := rtu.AppendADU(nil, 1, wantHolding(1, 0, 4))
	log := logBuf.String()
	if got := strings.Count(log, "discarded a late answer"); got != 1 {
		t.Fatalf("%d late-answer lines, want 1:\n%s", got, log)
	}
	if want := fmt.Sprintf("bytes=%d hex=%x complete=true", len(late), late); !strings.Contains(log, want) {
		t.Fatalf("log lacks %q:\n%s", want, log)
	}
}

// TestBusSkip: a request's Skip is asked when its turn on the line comes,
// not when it is queued; true ends it without a frame.
func TestBusSkip(t *testing.T) {
	bus, _ := line(t, rtu.Config{Name: "t", Timeout: 200 * time.Millisecond}, sim.Faults{}, 1)
	ctx := context.Background()
	// Unit 9 is silent: its request holds the line for its timeout while
	// the next one waits in the queue.
	busy := &rtu.Request{Unit: 9, PDU: readHolding(0, 1), Retries: 0}
	var wg sync.WaitGroup
	wg.Go(func() { bus.Do(ctx, busy) })
	for bus.Stats().Frames == 0 {
		time.Sleep(time.Millisecond)
	}
	var offline atomic.Bool
	asked := 0
	r := &rtu.Request{Unit: 1, PDU: readHolding(10, 2), Retries: -1, Skip: func() bool { asked++; return offline.Load() }}
	wg.Go(func() { bus.Do(ctx, r) })
	time.Sleep(50 * time.Millisecond) // r is queued behind busy
	offline.Store(true)
	wg.Wait()
	frames := bus.Stats().Frames
	if r.Outcome != rtu.Skipped || r.Attempts != 0 || asked != 1 || frames != 1 {
		t.Fatalf("skipped at its turn: %v, %d attempts, Skip asked %d times, %d frames on the line", r.Outcome, r.Attempts, asked, frames)
	}
	// Skip says no: it goes out as usual.
	offline.Store(false)
	bus.Do(ctx, r)
	if r.Outcome != rtu.OK || !bytes.Equal(r.Resp, wantHolding(1, 10, 2)) || asked != 2 {
		t.Fatalf("not skipped: %v % X, Skip asked %d times", r.Outcome, r.Resp, asked)
	}
}

// TestBusUnknownUnit: a request to a unit not known to answer gets one
// attempt, which listens for twice the timeout (the attempt and the
// guard after it): a dead unit costs one frame, a device slower than its
// timeout is still heard. A broken answer shows the device is there:
// the request gets its retries.
func TestBusUnknownUnit(t *testing.T) {
	const timeout = 60 * time.Millisecond
	do := func(bus *rtu.Bus, unit byte) *rtu.Request {
		r := &rtu.Request{Unit: unit, PDU: readHolding(0, 1), Retries: -1, Unknown: true}
		bus.Do(context.Background(), r)
		return r
	}
	bus, _ := line(t, rtu.Config{Timeout: timeout, Retries: 2}, sim.Faults{}, 1)
	start := time.Now()
	if r := do(bus, 5); r.Outcome != rtu.Timeout || r.Attempts != 1 {
		t.Fatalf("dead unit: %v after %d attempts, want one", r.Outcome, r.Attempts)
	}
	if took := time.Since(start); took < 2*timeout || took > 2*timeout+100*time.Millisecond {
		t.Fatalf("dead unit: %v, want its one attempt to listen for twice the timeout (%v)", took, 2*timeout)
	}
	// Slower than the timeout, within twice it: found.
	slow, _ := line(t, rtu.Config{Timeout: timeout, Retries: 2}, sim.Faults{Slow: timeout * 3 / 2}, 1)
	if r := do(slow, 1); r.Outcome != rtu.OK || r.Attempts != 1 || !bytes.Equal(r.Resp, wantHolding(1, 0, 1)) {
		t.Fatalf("slow unit: %v after %d attempts, % X", r.Outcome, r.Attempts, r.Resp)
	}
	// Broken answers: the retries go out.
	broken, _ := line(t, rtu.Config{Timeout: timeout, Retries: 2}, sim.Faults{Corrupt: 1, CRCOnly: true}, 2)
	if r := do(broken, 2); r.Attempts != 3 {
		t.Fatalf("unit answering broken: %d attempts, want 1 + 2 retries", r.Attempts)
	}
}

// TestBusOverBudget: with another client using the line, a request to a
// unit not known to answer takes the silence budget; once one has been
// silent, the next is refused at once, OverBudget, and never sent, until
// the silence is timeout/share behind.
func TestBusOverBudget(t *testing.T) {
	const timeout = 50 * time.Millisecond
	bus, dev := line(t, rtu.Config{Timeout: timeout, ProbeShare: 0.2}, sim.Faults{}, 1)
	poll := func() {
		known := &rtu.Request{Unit: 1, PDU: readHolding(0, 1), Retries: -1, Flow: 1}
		bus.Do(context.Background(), known)
		if known.Outcome != rtu.OK {
			t.Fatalf("known unit: %v", known.Outcome)
		}
	}
	probe := func() *rtu.Request {
		r := &rtu.Request{Unit: 7, PDU: readHolding(0, 1), Retries: -1, Flow: 2, Unknown: true, Probe: true}
		bus.Do(context.Background(), r)
		return r
	}
	poll()
	if r := probe(); r.Outcome != rtu.Timeout || r.Attempts != 1 {
		t.Fatalf("the first probe: %v, %d attempts", r.Outcome, r.Attempts)
	}
	poll()
	start := time.Now()
	if r := probe(); r.Outcome != rtu.OverBudget || r.Attempts != 0 || time.Since(start) > timeout {
		t.Fatalf("a probe right after a silence: %v, %d attempts, in %v", r.Outcome, r.Attempts, time.Since(start))
	}
	if n := dev.Stats().Requests; n != 2 {
		t.Fatalf("the device saw %d requests, want the two polls", n)
	}
	// 100 ms of silence at a share of 0.2: the next after 500 ms.
	time.Sleep(500 * time.Millisecond)
	poll()
	if r := probe(); r.Outcome != rtu.Timeout {
		t.Fatalf("a probe once the budget is back: %v", r.Outcome)
	}
}
