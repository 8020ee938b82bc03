package rtu_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/mcpgw/mcpgw/pkg/ops/capture"
	"github.com/mcpgw/mcpgw/pkg/pdu"
	"github.com/mcpgw/mcpgw/pkg/rtu"
)

// The simulation runs the bus in virtual time (testing/synctest): timers
// and timeouts advance only when every goroutine in the bubble waits, so a
// run covers in seconds what would take hours on a real line, and the
// same seed replays the same run. make test runs a short one; make
// simulate a long one:
//
//	go test -run TestSimulate ./pkg/rtu -sim.n 1000000 [-sim.seed N]
var (
	simN    = flag.Int("sim.n", 20000, "transactions per simulated run")
	simSeed = flag.Uint64("sim.seed", 0, "seed of the simulated runs (0: a new one each run, printed)")
	simDump = flag.Bool("sim.dump", false, "on a wrong answer, print the line's traffic and log around it")
)

// simTrace keeps a run's traffic and log in memory (with -sim.dump), so
// that a wrong answer can be shown with what the line carried before it.
type simTrace struct {
	mu    sync.Mutex
	start time.Time
	lines []string
	times []time.Duration
}

func (tr *simTrace) add(at time.Time, line string) {
	tr.mu.Lock()
	tr.lines = append(tr.lines, fmt.Sprintf("%12v %s", at.Sub(tr.start), line))
	tr.times = append(tr.times, at.Sub(tr.start))
	tr.mu.Unlock()
}

func (tr *simTrace) Write(r *capture.Record) error {
	tr.add(r.Time, fmt.Sprintf("%s % X", r.Dir, r.Data))
	return nil
}

func (tr *simTrace) Close() error { return nil }

func (tr *simTrace) Enabled(context.Context, slog.Level) bool { return true }
func (tr *simTrace) Handle(_ context.Context, r slog.Record) error {
	line := r.Message
	r.Attrs(func(a slog.Attr) bool { line += " " + a.String(); return true })
	tr.add(r.Time, "LOG "+line)
	return nil
}
func (tr *simTrace) WithAttrs([]slog.Attr) slog.Handler { return tr }
func (tr *simTrace) WithGroup(string) slog.Handler      { return tr }

// around returns the trace from d before at to d after it.
func (tr *simTrace) around(at time.Time, d time.Duration) string {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	var b strings.Builder
	for i, t := range tr.times {
		if t >= at.Sub(tr.start)-d && t <= at.Sub(tr.start)+d {
			b.WriteString(tr.lines[i] + "\n")
		}
	}
	return b.String()
}

// memPort is one end of an in-memory serial line: what the other end
// writes arrives at once, whole, and Read has go.bug.st/serial's
// semantics (0, nil on a timeout; a zero timeout does not wait).
type memPort struct {
	mu      sync.Mutex
	in      []byte
	closed  bool
	notify  chan struct{} // a byte arrived or the port closed
	timeout time.Duration
	min     int        // with minPort: a read waits for this many bytes (or its timeout)
	due     time.Time  // with minPort: a read of min bytes does not look before then
	peers   []*memPort // every other end of the line: a multi-drop bus
	echo    bool       // what is written here comes back here too (an echoing adapter)
}

// memLine returns a master's end of a multi-drop line and n devices' ends.
func memLine(n int) (master *memPort, devices []*memPort) {
	master = &memPort{notify: make(chan struct{}, 1), timeout: -1}
	for range n {
		d := &memPort{notify: make(chan struct{}, 1), timeout: -1, peers: []*memPort{master}}
		master.peers = append(master.peers, d)
		devices = append(devices, d)
	}
	return master, devices
}

func (p *memPort) deliver(b []byte) {
	p.mu.Lock()
	p.in = append(p.in, b...)
	p.mu.Unlock()
	select {
	case p.notify <- struct{}{}:
	default:
	}
}

func (p *memPort) Write(b []byte) (int, error) {
	if p.echo {
		p.deliver(b)
	}
	for _, q := range p.peers {
		q.deliver(b)
	}
	return len(b), nil
}

func (p *memPort) Read(b []byte) (int, error) {
	timeout := p.timeout
	if !p.due.IsZero() {
		// As the serial port does: it sleeps until the rest of a frame,
		// or an answer's first bytes, are due, whatever comes meanwhile.
		d := time.Until(p.due)
		if timeout >= 0 {
			d = min(d, timeout)
		}
		if d > 0 {
			time.Sleep(d)
			if timeout > 0 {
				timeout = max(timeout-d, time.Nanosecond)
			}
		}
	}
	var timer <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		timer = t.C
	}
	expired := false
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return 0, errors.New("memport: closed")
		}
		if len(p.in) >= max(p.min, 1) || (len(p.in) > 0 && (expired || timeout == 0)) {
			n := copy(b, p.in)
			p.in = p.in[:copy(p.in, p.in[n:])]
			p.mu.Unlock()
			return n, nil
		}
		p.mu.Unlock()
		if timeout == 0 || expired {
			return 0, nil
		}
		select {
		case <-p.notify:
		case <-timer:
			expired = true
		}
	}
}

// minPort is a memPort whose reads can wait for several bytes, as the
// Linux serial port's do (rtu.MinReader).
type minPort struct{ *memPort }

func (p minPort) SetReadMin(n int, due time.Time) error { p.min, p.due = n, due; return nil }

func (p *memPort) SetReadTimeout(t time.Duration) error { p.timeout = t; return nil }
func (p *memPort) ResetInputBuffer() error {
	p.mu.Lock()
	p.in = p.in[:0]
	p.mu.Unlock()
	return nil
}
func (p *memPort) Close() error {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	select {
	case p.notify <- struct{}{}:
	default:
	}
	return nil
}

// simFaults are the shares of answers a simulated device gets wrong.
type simFaults struct {
	drop, corrupt, garble, late, repeat float64
	echo                                bool
	// lateBy, if set, makes every late answer that late: past the
	// timeout, so the answer to a first attempt comes while the retry
	// waits for its own, and the retry's follows.
	lateBy time.Duration
}

// simChar is a character's time on the simulated line (115200 baud).
var simChar = 10 * time.Second / 115200

// simValue is what register addr of unit holds in the simulation. Every
// request of a run asks for a different address (see simulate), so an
// answer given to any request but its own shows as other values.
func simValue(unit byte, addr int) uint16 { return uint16(addr*7+int(unit)*13) ^ 0x5A5A }

// simDevice answers on dev as unit until dev closes. One request at a
// time, in order, as a device on a serial line: a prompt answer comes 0.2 to 5 ms after the
// request (unit 1's 1 ms to two character times more), a late one 0.5 to
// 1.5 timeouts after it. A request that
// arrived while the device was busy is answered promptly once it gets to
// it: the device was late because it was busy, not because of the
// request (the contract the package comment states).
func simDevice(dev *memPort, me byte, f simFaults, timeout time.Duration, seed uint64) {
	rnd := rand.New(rand.NewPCG(seed, uint64(me)))
	buf := make([]byte, 0, 1024)
	rx := make([]byte, 512)
	dev.SetReadTimeout(-1)
	busyTill := time.Time{}
	for {
		n, err := dev.Read(rx)
		if err != nil {
			return
		}
		arrived := time.Now()
		buf = append(buf, rx[:n]...)
		for len(buf) > 0 {
			frame, used, err := rtu.Scan(buf, rtu.RequestLen, true)
			if errors.Is(err, rtu.ErrNeedMore) {
				break
			}
			if err != nil || frame[0] != me {
				buf = buf[:copy(buf, buf[used:])]
				continue
			}
			unit, req := frame[0], append([]byte(nil), frame[1:len(frame)-2]...)
			buf = buf[:copy(buf, buf[used:])]
			var resp []byte
			switch req[0] {
			case pdu.ReadHoldingRegisters:
				addr, qty := int(binary.BigEndian.Uint16(req[1:])), int(binary.BigEndian.Uint16(req[3:]))
				resp = []byte{req[0], byte(2 * qty)}
				for i := range qty {
					resp = binary.BigEndian.AppendUint16(resp, simValue(unit, addr+i))
				}
			case pdu.WriteSingleRegister:
				resp = append(resp, req...)
			default:
				resp = []byte{req[0] | 0x80, byte(pdu.IllegalFunction)}
			}
			if rnd.Float64() < f.drop {
				continue
			}
			delay := time.Duration(200+rnd.IntN(4800)) * time.Microsecond
			if me == 1 {
				// A steady device, whose answers the line learns to
				// expect (rtu.Bus's first look).
				delay = time.Millisecond + time.Duration(rnd.Int64N(int64(2*simChar)))
			}
			switch late := rnd.Float64() < f.late && arrived.After(busyTill); {
			case late && f.lateBy > 0:
				delay = f.lateBy
			case late:
				delay = timeout/2 + time.Duration(rnd.Int64N(int64(timeout)))
			}
			time.Sleep(delay)
			out := []byte{}
			if rnd.Float64() < f.garble {
				for range 1 + rnd.IntN(6) {
					out = append(out, byte(rnd.IntN(256)))
				}
			}
			start := len(out)
			out = rtu.AppendADU(out, unit, resp)
			if rnd.Float64() < f.corrupt {
				out[start+rnd.IntN(len(out)-start)] ^= 1 << rnd.IntN(8)
			}
			if rnd.Float64() < f.repeat {
				out = append(out, out[start:]...) // the same answer twice, back to back
			}
			// The line carries the answer a character at a time, without
			// a pause; the master's UART hands it on in bursts of up to
			// its FIFO's 16 bytes, each once it has arrived whole.
			for len(out) > 0 {
				k := min(len(out), 1+rnd.IntN(16))
				time.Sleep(time.Duration(k) * simChar)
				dev.Write(out[:k])
				out = out[k:]
			}
			busyTill = time.Now()
		}
	}
}

// simRun is one simulated line: the bus, its devices, and clients making
// n transactions between them. It returns the outcome counts.
type simRun struct {
	name                            string
	readMin                         bool // the port is a MinReader, as on Linux
	trace                           *simTrace
	wrongAt                         []time.Time
	faults                          simFaults
	clients, n                      int
	timeout                         time.Duration
	retries                         int
	ok, exceptions, timeouts, wrong int
}

func (s *simRun) run(t *testing.T, seed uint64) {
	synctest.Test(t, func(t *testing.T) {
		// Units 1..3 answer; unit 4 is configured but dead.
		master, devs := memLine(3)
		master.echo = s.faults.echo
		var devWG sync.WaitGroup
		for i, dev := range devs {
			devWG.Go(func() { simDevice(dev, byte(1+i), s.faults, s.timeout, seed) })
		}
		var (
			trace    *simTrace
			recorder *capture.Recorder
			log      *slog.Logger
		)
		if *simDump {
			trace = &simTrace{start: time.Now()}
			recorder, log = capture.NewRecorder(trace, nil), slog.New(trace)
		}
		s.trace = trace
		bus := rtu.NewBus(rtu.Config{
			Name:    s.name,
			Capture: recorder,
			Log:     log,
			Open: func() (rtu.Port, error) {
				if s.readMin {
					return minPort{master}, nil
				}
				return master, nil
			},
			CharTime: simChar,
			Timeout:  s.timeout,
			Retries:  s.retries,
			Echo:     s.faults.echo,
		})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { bus.Run(ctx); close(done) }()
		for !bus.Up() {
			time.Sleep(time.Millisecond)
		}
		var (
			mu   sync.Mutex
			next int
			wg   sync.WaitGroup
		)
		for k := range s.clients {
			wg.Go(func() {
				rnd := rand.New(rand.NewPCG(seed, uint64(k)+100))
				r := &rtu.Request{Retries: -1}
				for {
					mu.Lock()
					i := next
					next++
					mu.Unlock()
					if i >= s.n {
						return
					}
					// Every request of the run has its own address (in
					// any window of 60000), and all reads ask for the same
					// quantity, so any two are confusable and a misplaced
					// answer shows.
					addr := i % 60000
					r.Unit = byte(1 + rnd.IntN(4))
					if rnd.IntN(8) == 0 {
						r.PDU = binary.BigEndian.AppendUint16(binary.BigEndian.AppendUint16([]byte{pdu.WriteSingleRegister}, uint16(addr)), uint16(i))
					} else {
						r.PDU = readHolding(uint16(addr), 4)
					}
					bus.Do(ctx, r)
					mu.Lock()
					s.tally(t, r, addr)
					mu.Unlock()
					if rnd.IntN(4) == 0 {
						time.Sleep(time.Duration(rnd.IntN(int(s.timeout))))
					}
				}
			})
		}
		wg.Wait()
		cancel()
		<-done
		for _, dev := range devs {
			dev.Close()
		}
		devWG.Wait()
		if recorder != nil {
			recorder.Close()
			for _, at := range s.wrongAt {
				t.Logf("the line around the wrong answer at %v:\n%s", at.Sub(trace.start), trace.around(at, 3*s.timeout))
			}
		}
		st := bus.Stats()
		if int(st.Requests) != s.n || int(st.Answers) != s.ok || int(st.Timeouts) != s.timeouts {
			t.Errorf("line counters %+v disagree with the clients: %d ok, %d timeouts of %d", st, s.ok, s.timeouts, s.n)
		}
	})
}

// tally checks one outcome: an answer must be the request's own, the dead
// unit never answers, and a live one fails only with a reason.
func (s *simRun) tally(t *testing.T, r *rtu.Request, addr int) {
	switch r.Outcome {
	case rtu.OK:
		var want []byte
		if r.PDU[0] == pdu.WriteSingleRegister {
			want = r.PDU
		} else {
			want = []byte{pdu.ReadHoldingRegisters, 8}
			for i := range 4 {
				want = binary.BigEndian.AppendUint16(want, simValue(r.Unit, addr+i))
			}
		}
		if r.Unit == 4 || string(r.Resp) != string(want) {
			s.wrong++
			if s.wrong <= 5 {
				t.Errorf("WRONG ANSWER: unit %d request % X got % X, want % X", r.Unit, r.PDU, r.Resp, want)
				if s.trace != nil && s.wrong == 1 {
					s.wrongAt = append(s.wrongAt, time.Now())
				}
			}
			return
		}
		s.ok++
	case rtu.Timeout:
		s.timeouts++
	default:
		t.Errorf("unit %d: outcome %v", r.Unit, r.Outcome)
	}
}

func simulate(t *testing.T, runs []*simRun) {
	seed := *simSeed
	if seed == 0 {
		seed = rand.Uint64()
	}
	t.Logf("seed %d (replay with -sim.seed %d)", seed, seed)
	// Each run twice, with half the transactions each: once with reads
	// that wait for one byte at a time (go.bug.st/serial's), once with
	// reads that wait for the rest of a frame (Linux's, rtu.MinReader).
	var both []*simRun
	for _, s := range runs {
		s.n /= 2
		m := *s
		m.name, m.readMin = s.name+", reads wait for whole frames", true
		both = append(both, s, &m)
	}
	for _, s := range both {
		t.Run(s.name, func(t *testing.T) {
			s.run(t, seed)
			t.Logf("%d transactions: %d ok, %d timed out, %d wrong", s.n, s.ok, s.timeouts, s.wrong)
			if t.Failed() {
				t.Logf("replay with -sim.seed %d", seed)
			}
			// Unit 4 is a quarter of the requests and always times out;
			// the live units must still get most of theirs through.
			if s.ok < s.n/2 {
				t.Errorf("only %d of %d answered", s.ok, s.n)
			}
		})
	}
}

// TestSimulate: under random faults, with several units and concurrent
// clients, no request ever gets an answer that is not its own.
func TestSimulate(t *testing.T) {
	n := *simN
	timeout := 100 * time.Millisecond
	simulate(t, []*simRun{
		{name: "healthy", n: n / 4, clients: 4, timeout: timeout, retries: 1},
		{name: "late around the timeout", faults: simFaults{late: 0.2}, n: n, clients: 8, timeout: timeout, retries: 1},
		{name: "every fault", faults: simFaults{drop: 0.05, corrupt: 0.08, garble: 0.08, late: 0.05, repeat: 0.05}, n: n, clients: 8, timeout: timeout, retries: 2},
		{name: "every fault, echoing adapter", faults: simFaults{drop: 0.05, corrupt: 0.08, garble: 0.05, late: 0.05, repeat: 0.05, echo: true}, n: n / 2, clients: 8, timeout: timeout, retries: 1},
		{name: "late by 1.4 timeouts", faults: simFaults{drop: 0.03, late: 0.15, lateBy: timeout * 14 / 10}, n: n / 2, clients: 8, timeout: timeout, retries: 1},
		{name: "no retries", faults: simFaults{drop: 0.05, corrupt: 0.05, late: 0.1, repeat: 0.05}, n: n / 2, clients: 8, timeout: timeout, retries: 0},
	})
}

// scriptedDevice answers unit 1's reads on dev, each as the next entry of
// script says ('o' at once, 'd' not at all, 'c' with a bad CRC, 'l' late
// by scriptLate, 'x' late and with a bad CRC), then at once. Like a real device it reads nothing while
// it waits to answer: what came meanwhile is read next.
const scriptLate = 150 * time.Millisecond

func scriptedDevice(dev *memPort, script string) {
	serveRequests(dev, func(frame []byte) {
		act := byte('o')
		if script != "" {
			act, script = script[0], script[1:]
		}
		if act == 'd' {
			return
		}
		if act == 'l' || act == 'x' {
			time.Sleep(scriptLate)
		}
		addr, qty := int(binary.BigEndian.Uint16(frame[2:])), int(binary.BigEndian.Uint16(frame[4:]))
		time.Sleep(time.Millisecond)
		out := rtu.AppendADU(nil, 1, readAnswer(addr, qty))
		if act == 'c' || act == 'x' {
			out[len(out)-1] ^= 0xFF
		}
		time.Sleep(time.Duration(len(out)) * simChar)
		dev.Write(out)
	})
}

// serveRequests calls answer with each whole request frame that arrives
// at dev, one at a time, until dev closes: a device's side of the line
// (rtu.ReadRequests). Like a real device, it reads nothing while answer
// runs.
func serveRequests(dev *memPort, answer func(frame []byte)) {
	rtu.ReadRequests(context.Background(), dev, rtu.FrameGap(simChar), func(f []byte, _ time.Time) error {
		answer(f)
		return nil
	}, func([]byte, error) {})
}

// scripted runs a bus (timeout scriptTimeout, one retry) whose unit 1 is
// a scriptedDevice, inside a synctest bubble, and returns a function
// that reads 4 registers at addr through it. It first makes four reads
// that the device answers at once, so the line learns the unit's pace:
// script starts after them.
func scripted(t *testing.T, script string) (read func(addr uint16) *rtu.Request) {
	readUnit := deviceLine(t, 1, func(dev *memPort) { scriptedDevice(dev, "oooo"+script) })
	return func(addr uint16) *rtu.Request { return readUnit(1, addr) }
}

// deviceLine runs a bus (timeout scriptTimeout, retries further attempts)
// inside a synctest bubble, with device serving the far end of its line,
// and returns a function that reads 4 registers at addr of unit through
// it. It first reads unit 1 four times, which device must answer at once,
// so that the line knows unit 1's pace.
func deviceLine(t *testing.T, retries int, device func(dev *memPort)) (read func(unit byte, addr uint16) *rtu.Request) {
	master, devs := memLine(1)
	done := make(chan struct{})
	go func() { device(devs[0]); close(done) }()
	bus := rtu.NewBus(rtu.Config{Open: func() (rtu.Port, error) { return master, nil }, CharTime: simChar, Timeout: scriptTimeout, Retries: retries})
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); devs[0].Close(); <-done }) // the device may be sleeping on a late answer
	go bus.Run(ctx)
	for !bus.Up() {
		time.Sleep(time.Millisecond)
	}
	read = func(unit byte, addr uint16) *rtu.Request {
		r := &rtu.Request{Unit: unit, PDU: readHolding(addr, 4), Retries: -1}
		bus.Do(ctx, r)
		return r
	}
	for i := range uint16(4) {
		if r := read(1, i); r.Outcome != rtu.OK {
			t.Fatalf("read %d: %v", i, r.Outcome)
		}
	}
	return read
}

const scriptTimeout = 100 * time.Millisecond

// TestFailedOnPromptBrokenAnswerOwesNothing: a transaction whose first
// attempt heard nothing and whose retry got a broken answer at the unit's
// usual pace has failed, but leaves nothing owed (the broken answer was
// the retry's; the device answers in order): the next request, which is
// confusable with it, goes after the collision guard, not after the two
// timeouts an owed answer could take.
func TestFailedOnPromptBrokenAnswerOwesNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		do := scripted(t, "dc")
		const timeout = scriptTimeout
		ended(t, do(10), rtu.Timeout, 2, "dropped, then broken")
		start := time.Now()
		r := do(11)
		if r.Outcome != rtu.OK {
			t.Fatalf("next read: %v", r.Outcome)
		}
		if d := time.Since(start); d >= timeout {
			t.Fatalf("the next read took %v: it waited for an answer that was not owed", d)
		}
	})
}

// TestOwedAnswersCountFromTheirFrame: a read whose first attempt got a
// broken answer (the device had finished talking) and whose retry heard
// nothing leaves the retry's answer owed, which the next confusable read
// must wait out: until the unit's lateness (here twice the timeout) after
// the retry went out, not after the transaction ended. (Had the first
// attempt heard nothing too, the device could still be busy with it when
// the retry came, and the wait would be two latenesses from the first:
// TestOwedAnswerOfABusyDevice.)
func TestOwedAnswersCountFromTheirFrame(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		do := scripted(t, "cd")
		ended(t, do(10), rtu.Timeout, 2, "broken, then dropped")
		start := time.Now()
		if r := do(11); r.Outcome != rtu.OK {
			t.Fatalf("next read: %v", r.Outcome)
		}
		// The retry went out a timeout and a t3.5 before start.
		if d := time.Since(start); d < scriptTimeout*9/10 || d > scriptTimeout*11/10 {
			t.Fatalf("the next read took %v, want about %v: the wait for owed answers counts from their frame", d, scriptTimeout)
		}
	})
}

// TestGuardEndsWhenOwedAnswersCome: after a failed read whose retry's
// answer is still owed, the next read to the unit waits for that answer,
// and then only for the unit's prompt time: the guard against a collision
// with an answer on its way (the unit's slowest recent answer, here a
// late one) has nothing left to guard against.
func TestGuardEndsWhenOwedAnswersCome(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// Read 10: late, then the retry answered at once (the unit's
		// slowest answer is now the late one). Read 11: broken, then
		// late: it fails, and the retry's answer is owed.
		do := scripted(t, "lo"+"cl")
		ended(t, do(10), rtu.OK, 2, "late, then at once")
		ended(t, do(11), rtu.Timeout, 2, "broken, then late")
		start := time.Now()
		if r := do(12); r.Outcome != rtu.OK {
			t.Fatalf("next read: %v", r.Outcome)
		}
		// The owed answer comes scriptLate after the retry went out, a
		// timeout and a t3.5 before start.
		if d, want := time.Since(start), scriptLate-scriptTimeout; d > want+want/2 {
			t.Fatalf("the next read took %v, want about %v: after the owed answer came it waited for the guard against it", d, want)
		}
	})
}

// TestOwedAnswerOfABusyDevice: the first attempt's answer comes late,
// during the retry, and is taken; the device, busy until then, answers
// the retry late too. That answer is owed from when the device was free
// to work on the retry (when its late answer ended), not from when the
// retry went out: the next read, confusable with it, must not take it.
func TestOwedAnswerOfABusyDevice(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		do := scripted(t, "ll")
		ended(t, do(10), rtu.OK, 2, "late, then late")
		r := do(11)
		if r.Outcome != rtu.OK {
			t.Fatalf("next read: %v", r.Outcome)
		}
		if want := readAnswer(11, 4); !bytes.Equal(r.Resp, want) {
			t.Fatalf("WRONG ANSWER to the next read: % X, want % X (the retry's late answer to read 10 was taken for it)", r.Resp, want)
		}
	})
}

// ended fails the test unless r ended as outcome after attempts
// attempts; what says which read it was.
func ended(t *testing.T, r *rtu.Request, outcome rtu.Outcome, attempts int, what string) {
	t.Helper()
	if r.Outcome != outcome || r.Attempts != attempts {
		t.Fatalf("%s: %v after %d attempts", what, r.Outcome, r.Attempts)
	}
}

// readAnswer is scriptedDevice's answer PDU to a read of qty registers at
// addr.
func readAnswer(addr, qty int) []byte {
	resp := []byte{pdu.ReadHoldingRegisters, byte(2 * qty)}
	for i := range qty {
		resp = binary.BigEndian.AppendUint16(resp, simValue(1, addr+i))
	}
	return resp
}

// TestLatenessCountsFromWhenTheDeviceWasFree: a device late twice in a
// row (the first attempt's answer taken during the retry, the retry's
// answer late after it) has shown a lateness of scriptLate, not of both
// lates together: the retry's answer is measured from when the device
// was free to start on it. A later owed answer that never comes then
// holds the next confusable read for the unit's lateness (at least twice
// the timeout) from its frame, as in TestOwedAnswersCountFromTheirFrame,
// not for the two lates.
func TestLatenessCountsFromWhenTheDeviceWasFree(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		do := scripted(t, "ll"+"o"+"cd")
		ended(t, do(10), rtu.OK, 2, "late, then late")
		if r := do(11); r.Outcome != rtu.OK || !bytes.Equal(r.Resp, readAnswer(11, 4)) {
			t.Fatalf("read after the two lates: %v % X", r.Outcome, r.Resp)
		}
		ended(t, do(12), rtu.Timeout, 2, "broken, then dropped")
		start := time.Now()
		if r := do(13); r.Outcome != rtu.OK {
			t.Fatalf("next read: %v", r.Outcome)
		}
		// The retry went out a timeout and a t3.5 before start; the
		// wait ends twice the timeout after it.
		if d := time.Since(start); d > scriptTimeout*11/10 {
			t.Fatalf("the next read took %v, want about %v: the two lates in a row were taken for one lateness", d, scriptTimeout)
		}
	})
}

// TestLateRetryAnswerSettlesWhatWasOwed: the first attempt heard
// nothing (dropped) and the retry's answer comes late, after the
// transaction failed, while the next read waits for what the unit owes.
// That answer ends long after the first attempt's answer was due: it is
// the retry's, and the device, answering in order, will never answer the
// first. The next read goes once it has come, not a lateness later, and
// the unit's lateness is measured from the retry (scriptLate), not from
// the first attempt: a later owed answer that never comes holds a
// confusable read for twice the timeout from its frame, as in
// TestOwedAnswersCountFromTheirFrame.
func TestLateRetryAnswerSettlesWhatWasOwed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		do := scripted(t, "dl"+"o"+"cd")
		ended(t, do(10), rtu.Timeout, 2, "dropped, then late")
		start := time.Now()
		r := do(11)
		if r.Outcome != rtu.OK || !bytes.Equal(r.Resp, readAnswer(11, 4)) {
			t.Fatalf("read after the late answer: %v % X", r.Outcome, r.Resp)
		}
		// The late answer ends about half a timeout after start.
		if d := time.Since(start); d > scriptTimeout*3/4 {
			t.Fatalf("the next read took %v: it waited for the dropped attempt's answer after the retry's came", d)
		}
		ended(t, do(12), rtu.Timeout, 2, "broken, then dropped")
		start = time.Now()
		if r := do(13); r.Outcome != rtu.OK {
			t.Fatalf("next read: %v", r.Outcome)
		}
		if d := time.Since(start); d > scriptTimeout*11/10 {
			t.Fatalf("the next read took %v, want about %v: the late answer was measured from the dropped attempt", d, scriptTimeout)
		}
	})
}

// TestBrokenOwedAnswerCountsWhenAlone: the first attempt's answer comes
// late, during the retry, and is taken; the retry's answer, owed, follows
// at once with a bad CRC. No other unit is talking, and the frame has the
// answer's exact shape: it can only be the owed answer, broken, so the
// next confusable read goes after the unit's prompt time instead of
// waiting out the unit's lateness for an answer that has come.
func TestBrokenOwedAnswerCountsWhenAlone(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		do := scripted(t, "lc")
		if r := do(10); r.Outcome != rtu.OK || r.Attempts != 2 || !bytes.Equal(r.Resp, readAnswer(10, 4)) {
			t.Fatalf("late, then broken: %v after %d attempts, % X", r.Outcome, r.Attempts, r.Resp)
		}
		start := time.Now()
		r := do(11)
		if r.Outcome != rtu.OK || !bytes.Equal(r.Resp, readAnswer(11, 4)) {
			t.Fatalf("next read: %v % X", r.Outcome, r.Resp)
		}
		if d := time.Since(start); d > scriptTimeout/2 {
			t.Fatalf("the next read took %v: it waited for the owed answer that came broken", d)
		}
	})
}

// TestLateAnswerEndsSilence: a read whose attempts both heard nothing
// makes its unit one that gets a single attempt, until it answers again.
// The retry's answer, owed, then comes late, while the next read waits
// for it: the unit is alive, and the next read has its retry again.
func TestLateAnswerEndsSilence(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		do := scripted(t, "dl"+"co")
		ended(t, do(10), rtu.Timeout, 2, "dropped, then late")
		r := do(11)
		if r.Outcome != rtu.OK || r.Attempts != 2 || !bytes.Equal(r.Resp, readAnswer(11, 4)) {
			t.Fatalf("broken, then at once: %v after %d attempts, % X (want the retry's answer)", r.Outcome, r.Attempts, r.Resp)
		}
	})
}

// TestBrokenLateAnswerHeardDuringTheRetry: the first attempt's answer
// comes late with a bad CRC, during the retry, and the retry's answer
// follows at once. The unit was the only one talking: the broken frame
// was its answer to the first attempt, the device has answered both, and
// nothing is owed; the next confusable read goes at once.
func TestBrokenLateAnswerHeardDuringTheRetry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		do := scripted(t, "xo")
		if r := do(10); r.Outcome != rtu.OK || r.Attempts != 2 || !bytes.Equal(r.Resp, readAnswer(10, 4)) {
			t.Fatalf("late and broken, then at once: %v after %d attempts, % X", r.Outcome, r.Attempts, r.Resp)
		}
		start := time.Now()
		if r := do(11); r.Outcome != rtu.OK || !bytes.Equal(r.Resp, readAnswer(11, 4)) {
			t.Fatalf("next read: %v % X", r.Outcome, r.Resp)
		}
		if d := time.Since(start); d > scriptTimeout/2 {
			t.Fatalf("the next read took %v: it waited for an answer the broken one had settled", d)
		}
	})
}

// TestBrokenFrameWhileAnotherUnitOwes: unit 2 misses a read (its answer
// is owed), and during the next transaction, to unit 1, unit 2's late
// answer arrives with its address byte hit by noise, so that it starts
// with unit 1's address and fails its CRC. While another unit may be
// talking, such a frame is no proof that unit 1 has answered: the
// attempt listens on and takes unit 1's own answer when it comes, and the
// next read to unit 1 gets its own. (Found by the simulation, seed
// 611323132893674749: the frame ended the attempt as unit 1's broken
// answer, and unit 1's answer then went to the next read.)
func TestBrokenFrameWhileAnotherUnitOwes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		read := deviceLine(t, 0, func(dev *memPort) {
			serveRequests(dev, func(frame []byte) {
				if frame[0] == 2 {
					return // unit 2 answers late: below
				}
				addr := int(binary.BigEndian.Uint16(frame[2:]))
				if addr == 20 {
					// Unit 2's late answer to its read of 10, its address
					// turned into unit 1's (and its CRC now wrong).
					late := rtu.AppendADU(nil, 2, readAnswer(10, 4))
					late[0] = 1
					time.Sleep(2 * time.Millisecond)
					dev.Write(late)
					time.Sleep(30 * time.Millisecond)
				} else {
					time.Sleep(time.Millisecond)
				}
				dev.Write(rtu.AppendADU(nil, 1, readAnswer(addr, 4)))
			})
		})
		if r := read(2, 10); r.Outcome != rtu.Timeout {
			t.Fatalf("unit 2's read: %v, want a timeout", r.Outcome)
		}
		if r := read(1, 20); r.Outcome != rtu.OK || !bytes.Equal(r.Resp, readAnswer(20, 4)) {
			t.Fatalf("unit 1's read during unit 2's late answer: %v % X, want its own answer", r.Outcome, r.Resp)
		}
		if r := read(1, 21); r.Outcome != rtu.OK || !bytes.Equal(r.Resp, readAnswer(21, 4)) {
			t.Fatalf("WRONG ANSWER to the next read: %v % X, want % X", r.Outcome, r.Resp, readAnswer(21, 4))
		}
	})
}

// countingPort counts the reads that bring bytes.
type countingPort struct {
	minPort
	reads int
}

func (p *countingPort) Read(b []byte) (int, error) {
	n, err := p.minPort.Read(b)
	if n > 0 {
		p.reads++
	}
	return n, err
}

// TestTrickledAnswerReadInTwo: on a line that carries an answer in a
// character at a time, once the line knows when a unit's answers begin,
// it first looks when an answer's length is known and then when the
// whole answer is due: two reads, where waiting for the first byte took
// three (the first byte, then enough to know the length, then the rest),
// each a wakeup of the line's goroutine. The answer is handed on the
// moment its last byte arrives, and so is an exception, which is shorter
// and ends before the second look.
func TestTrickledAnswerReadInTwo(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		master, devs := memLine(1)
		port := &countingPort{minPort: minPort{master}}
		var lastByte time.Time
		done := make(chan struct{})
		go func() {
			defer close(done)
			serveRequests(devs[0], func(frame []byte) {
				addr, qty := int(binary.BigEndian.Uint16(frame[2:])), int(binary.BigEndian.Uint16(frame[4:]))
				resp := readAnswer(addr, qty)
				if addr >= 1000 {
					resp = pdu.AppendException(nil, pdu.ReadHoldingRegisters, pdu.IllegalDataAddress)
				}
				time.Sleep(time.Millisecond)
				if addr == 500 || addr == 650 {
					time.Sleep(2 * time.Millisecond) // slower than usual
				}
				for _, c := range rtu.AppendADU(nil, 1, resp) {
					time.Sleep(simChar)
					lastByte = time.Now() // before the bus can have the byte
					devs[0].Write([]byte{c})
				}
			})
		}()
		bus := rtu.NewBus(rtu.Config{Open: func() (rtu.Port, error) { return port, nil }, CharTime: simChar, Timeout: scriptTimeout})
		ctx, cancel := context.WithCancel(context.Background())
		defer func() { cancel(); devs[0].Close(); <-done }()
		go bus.Run(ctx)
		read := func(addr uint16) (*rtu.Request, int, time.Duration) {
			r := &rtu.Request{Unit: 1, PDU: readHolding(addr, 10), Retries: -1}
			port.reads = 0
			bus.Do(ctx, r)
			return r, port.reads, time.Since(lastByte)
		}
		r, reads, _ := read(0)
		if r.Outcome != rtu.OK || reads != 3 {
			t.Fatalf("first read, the line still learning: %v in %d reads, want OK in 3", r.Outcome, reads)
		}
		for i := range uint16(4) {
			read(10 * (i + 1))
		}
		for _, tc := range []struct {
			addr  uint16
			reads int
		}{
			{100, 2}, {200, 2},
			{1000, 2}, // an exception
			{300, 2},
			{500, 3}, // begins 2 ms later than usual, after the first look,
			{600, 3}, // and so the next one waits for the first byte;
			{700, 2}, // then the unit is looked at again
			{650, 3}, // a miss,
			{660, 3}, // one transaction without a look,
			{670, 2}, // a look, at the usual pace again:
			{500, 3}, // a miss after a look that found the answer
			{510, 3}, // is the first in a row again
			{650, 3}, // a second miss in a row,
			{520, 3}, // two transactions
			{530, 3}, // without a look
			{540, 2},
		} {
			r, reads, after := read(tc.addr)
			want := readAnswer(int(tc.addr), 10)
			if tc.addr >= 1000 {
				want = pdu.AppendException(nil, pdu.ReadHoldingRegisters, pdu.IllegalDataAddress)
			}
			if r.Outcome != rtu.OK || !bytes.Equal(r.Resp, want) {
				t.Fatalf("read %d: %v % x, want % x", tc.addr, r.Outcome, r.Resp, want)
			}
			if reads != tc.reads {
				t.Errorf("read %d: the answer took %d reads, want %d", tc.addr, reads, tc.reads)
			}
			if after != 0 {
				t.Errorf("read %d: handed on %v after its last byte, want at once", tc.addr, after)
			}
		}
	})
}
