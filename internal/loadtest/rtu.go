package loadtest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"time"

	"github.com/mcpgw/mcpgw/pkg/pdu"
	"github.com/mcpgw/mcpgw/pkg/rtu"
	"github.com/mcpgw/mcpgw/pkg/wire/serialport"
)

// RunRTU makes the same load as Run from one RTU master straight on a
// serial line: the baseline a gateway is measured against. Like any master
// that keeps the spec, it leaves gap (t3.5) of silence after each answer
// before the next request; it ends each answer at its predicted length.
// Clients in cfg is ignored.
func RunRTU(ctx context.Context, port serialport.Port, cfg Config, gap time.Duration) *Result {
	cfg.defaults(time.Second)
	if cfg.Duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cfg.Duration)
		defer cancel()
	}
	cr := newClientResult()
	rnd := rand.New(rand.NewPCG(cfg.Seed, 0))
	m := newMaster(port, gap, cfg.Timeout)
	start := time.Now()
	poll(ctx, &cfg, rnd, &cr, m.read)
	return merge([]clientResult{cr}, time.Since(start))
}

// RunSideBySide measures one polling client three ways in turn: the same
// request (Units, Qty, a random address) from an RTU master straight on
// port, then through the gateway at cfg.Addr, then, if echoAddr is set, a
// bare 12-byte round trip to a TCP echo server; with cfg.Think after each.
// Taking them in turn, rather than one run after another, makes all three
// see the same moments of the machine: on a shared or virtual machine the
// cost of waking a process drifts from one second to the next, and a
// difference between runs taken apart would measure that drift as much as
// the gateway. It returns the direct and gateway results and the echo
// round trips.
func RunSideBySide(ctx context.Context, port serialport.Port, gap time.Duration, echoAddr string, cfg Config) (direct, via *Result, echo []time.Duration, err error) {
	cfg.defaults(time.Second)
	c := NewClient(cfg.Addr, cfg.Timeout, 1)
	defer c.Close()
	var ping func() error
	if echoAddr != "" {
		e, err := net.Dial("tcp", echoAddr)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("echo server: %w", err)
		}
		defer e.Close()
		buf := make([]byte, 12)
		ping = func() error {
			t := time.Now()
			e.SetDeadline(t.Add(cfg.Timeout))
			if _, err := e.Write(buf); err != nil {
				return fmt.Errorf("echo server: %w", err)
			}
			if _, err := io.ReadFull(e, buf); err != nil {
				return fmt.Errorf("echo server: %w", err)
			}
			echo = append(echo, time.Since(t))
			time.Sleep(cfg.Think)
			return nil
		}
	}
	direct, via, err = inTurn(ctx, NewMaster(port, gap, cfg.Timeout), c, cfg, ping)
	return direct, via, echo, err
}

// defaults fills in what cfg leaves zero.
func (cfg *Config) defaults(timeout time.Duration) {
	if cfg.MaxAddr <= 0 {
		cfg.MaxAddr = 9000
	}
	if cfg.Qty <= 0 {
		cfg.Qty = 10
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = timeout
	}
}

// master is an RTU master straight on a line, a request at a time.
type master struct {
	port    serialport.Port
	gap     time.Duration
	timeout time.Duration
	last    time.Time // the last byte of the last answer
	adu     []byte
	buf     []byte
	rx      []byte
}

// errWrite marks a failed write to the port: the line is gone.
var errWrite = errors.New("write")

func newMaster(port serialport.Port, gap, timeout time.Duration) *master {
	port.ResetInputBuffer()
	return &master{port: port, gap: gap, timeout: timeout,
		adu: make([]byte, 0, 16), buf: make([]byte, 0, 512), rx: make([]byte, 512)}
}

// read reads qty holding registers at addr of unit, and returns the
// answer's PDU (valid until the next call) and the time from the start of
// the request's write to the answer's last byte.
func (m *master) read(unit byte, addr, qty int) ([]byte, time.Duration, error) {
	m.adu = rtu.AppendADU(m.adu[:0], unit, []byte{pdu.ReadHoldingRegisters, byte(addr >> 8), byte(addr), byte(qty >> 8), byte(qty)})
	// t3.5 of silence since the last answer, timed by the port as the
	// gateway times it (time.Sleep would overshoot by up to a millisecond).
	for d := m.gap - time.Since(m.last); d > 0; d = m.gap - time.Since(m.last) {
		m.port.SetReadTimeout(d)
		if n, _ := m.port.Read(m.rx); n > 0 {
			m.last = time.Now()
		}
	}
	t0 := time.Now()
	if _, err := m.port.Write(m.adu); err != nil {
		return nil, 0, fmt.Errorf("%w: %w", errWrite, err)
	}
	frame, err := readAnswer(m.port, m.buf[:0], m.rx, unit, t0.Add(m.timeout))
	m.last = time.Now()
	if err != nil {
		return nil, 0, err
	}
	return frame[1 : len(frame)-2], m.last.Sub(t0), nil
}

func readAnswer(port serialport.Port, buf, rx []byte, unit byte, deadline time.Time) ([]byte, error) {
	want := rtu.Expect{Unit: unit, FC: pdu.ReadHoldingRegisters}
	for {
		frame, used, err := rtu.Scan(buf, want.Len, false)
		if err == nil {
			return frame, nil
		}
		if used > 0 {
			return nil, fmt.Errorf("bad answer: %w", err)
		}
		wait := time.Until(deadline)
		if wait <= 0 {
			return nil, fmt.Errorf("no answer")
		}
		port.SetReadTimeout(wait)
		n, err := port.Read(rx)
		if err != nil {
			return nil, err
		}
		buf = append(buf, rx[:n]...)
	}
}

// Reader reads holding registers a request at a time and returns the
// answer's PDU (valid until the next call) and how long it took: an RTU
// master on a port (NewMaster) or a Modbus TCP client (NewClient).
type Reader interface {
	Read(ctx context.Context, unit byte, addr, qty int) ([]byte, time.Duration, error)
}

// Master is an RTU master on a port: a serial line, or anything that
// carries RTU frames (an ASCII line's port, a TCP connection to a
// serial device server or to an RTU over TCP listener).
type Master struct{ m *master }

// NewMaster returns a master on port that leaves gap of silence between
// an answer and the next request (t3.5 on a serial line; 0 on TCP).
func NewMaster(port serialport.Port, gap, timeout time.Duration) *Master {
	return &Master{newMaster(port, gap, timeout)}
}

// Read implements Reader.
func (m *Master) Read(_ context.Context, unit byte, addr, qty int) ([]byte, time.Duration, error) {
	return m.m.read(unit, addr, qty)
}

// RunPair measures the same polls two ways in turn, as RunSideBySide
// does: each request (cfg's Units, Qty, a random address) from direct,
// then from via, with cfg.Think after each. Every answer is checked.
func RunPair(ctx context.Context, direct, via Reader, cfg Config) (d, v *Result) {
	cfg.defaults(time.Second)
	d, v, _ = inTurn(ctx, direct, via, cfg, nil)
	return d, v
}

// inTurn makes cfg.Requests polls, each the same request from direct and
// then from via, with cfg.Think after each, and then calls after (if
// set), until ctx ends. A master whose line is gone (errWrite), or an
// error from after, ends it with that error.
func inTurn(ctx context.Context, direct, via Reader, cfg Config, after func() error) (d, v *Result, err error) {
	rnd := rand.New(rand.NewPCG(cfg.Seed, 0))
	rs := [2]clientResult{newClientResult(), newClientResult()}
	start := time.Now()
	for i := 0; i < cfg.Requests && ctx.Err() == nil; i++ {
		unit, addr := cfg.pick(rnd)
		for k, r := range [2]Reader{direct, via} {
			p, lat, err := r.Read(ctx, unit, addr, cfg.Qty)
			switch {
			case errors.Is(err, errWrite):
				return nil, nil, err
			case err != nil:
				rs[k].errs[err.Error()]++
			default:
				rs[k].tally(unit, addr, cfg.Qty, p, lat, cfg.Pattern)
			}
			time.Sleep(cfg.Think)
		}
		if after != nil {
			if err := after(); err != nil {
				return nil, nil, err
			}
		}
	}
	elapsed := time.Since(start)
	return merge(rs[:1], elapsed), merge(rs[1:], elapsed), nil
}
