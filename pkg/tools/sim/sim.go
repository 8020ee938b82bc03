// Package sim runs simulated Modbus RTU devices on a serial port: one
// goroutine reads requests off the line and answers, for each unit id it
// serves, from a registers.Model. Faults can be injected to test what
// reads from it.
package sim

import (
	"context"
	"encoding/hex"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/mcpgw/mcpgw/pkg/crc"
	"github.com/mcpgw/mcpgw/pkg/pdu"
	"github.com/mcpgw/mcpgw/pkg/registers"
	"github.com/mcpgw/mcpgw/pkg/rtu"
	"github.com/mcpgw/mcpgw/pkg/wire/serialport"
)

// Faults make a simulated line misbehave. Rates are shares from 0 to 1,
// drawn for each answer.
type Faults struct {
	Drop    float64       // answer nothing
	Corrupt float64       // answer with one bit flipped after the unit id: its CRC fails, and its function code or length may be wrong too
	CRCOnly bool          // Corrupt flips a bit of the CRC only: the frame whole, just its check wrong
	Late    float64       // answer after LateBy instead of at once
	LateBy  time.Duration // how late a late answer is
	Noise   float64       // add random bytes before the answer
	Echo    bool          // echo each request back first, as some RS-485 adapters do
	Slow    time.Duration // pause before every answer
	Seed    uint64        // for repeatable runs; 0 picks one
}

// Stats count what a simulated line did.
type Stats struct {
	Requests, Answers, Broadcasts, Dropped, Corrupted, LateAnswers, BadFrames int
}

// Line serves simulated devices on one port.
type Line struct {
	Port     serialport.Port
	Units    map[byte]*registers.Model
	Faults   Faults
	FrameGap time.Duration // silence that ends a request; default 1750 µs
	// Replay, if set, answers from a capture instead of the models: each
	// request with the answers recorded for the same bytes, in turn (the
	// last one again once they run out), nil meaning silence; requests
	// the capture never saw get no answer. See replay.Answers.
	Replay map[string][][]byte
	Log    *slog.Logger
	// BeforeAnswer, if set, runs before a unit's model answers a request
	// (for a device whose values change on every read, or that reports
	// its own clock); it locks the model itself if it touches it.
	BeforeAnswer func(unit byte, req []byte, m *registers.Model)

	replayed map[string]int

	mu         sync.Mutex
	stats      Stats
	muted      [256]bool
	seen       [256]int // requests seen per unit, muted or not
	unitFaults map[byte]Faults
}

// SetUnitFaults makes one unit misbehave as f asks, in place of the
// line's Faults (a flaky meter among good ones), or, with nil, follow
// the line's again; safe while the line is served.
func (l *Line) SetUnitFaults(unit byte, f *Faults) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.unitFaults == nil {
		l.unitFaults = map[byte]Faults{}
	}
	if f == nil {
		delete(l.unitFaults, unit)
		return
	}
	l.unitFaults[unit] = *f
}

// Mute makes unit silent (a device unplugged) or brings it back; safe
// while the line is served.
func (l *Line) Mute(unit byte, muted bool) {
	l.mu.Lock()
	l.muted[unit] = muted
	l.mu.Unlock()
}

// Seen returns how many requests for unit reached the line, answered or
// not.
func (l *Line) Seen(unit byte) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.seen[unit]
}

// NewUnits returns patterned models (see registers.Model.Pattern) of size
// objects for each unit in units.
func NewUnits(units []byte, size int) map[byte]*registers.Model {
	m := make(map[byte]*registers.Model, len(units))
	for _, u := range units {
		m[u] = registers.New(size)
		m[u].Pattern(u)
	}
	return m
}

// Stats returns a copy of the counters.
func (l *Line) Stats() Stats {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.stats
}

func (l *Line) count(f func(*Stats)) {
	l.mu.Lock()
	f(&l.stats)
	l.mu.Unlock()
}

// Start serves the line in a goroutine of its own until stop is called;
// stop returns once Serve has returned.
func (l *Line) Start() (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { l.Serve(ctx); close(done) }()
	return func() { cancel(); <-done }
}

// OnPty makes a virtual serial line with simulated units ids (10000
// objects of each kind) at its far end, served until ctx ends; the caller
// opens pty.Path and closes the pty.
func OnPty(ctx context.Context, ids []byte, faults Faults, log *slog.Logger) (*serialport.Pty, *Line, error) {
	pty, err := serialport.NewPty()
	if err != nil {
		return nil, nil, err
	}
	dev := &Line{Port: pty.Device, Units: NewUnits(ids, 10000), Faults: faults, Log: log}
	go dev.Serve(ctx)
	return pty, dev, nil
}

// Serve answers requests until ctx ends or the port fails.
func (l *Line) Serve(ctx context.Context) error {
	if l.Log == nil {
		l.Log = slog.New(slog.DiscardHandler)
	}
	gap := l.FrameGap
	if gap <= 0 {
		gap = 1750 * time.Microsecond
	}
	seed := l.Faults.Seed
	if seed == 0 {
		seed = rand.Uint64()
	}
	rnd := rand.New(rand.NewPCG(seed, seed^0x9E3779B97F4A7C15))
	var (
		out  = make([]byte, 0, 600)
		resp = make([]byte, 0, 256)
		werr error // a failed write, which ends ReadRequests
	)
	err := rtu.ReadRequests(ctx, l.Port, gap, func(frame []byte, _ time.Time) error {
		out = l.answer(frame, out[:0], resp[:0], rnd)
		if len(out) > 0 {
			if _, err := l.Port.Write(out); err != nil {
				werr = fmt.Errorf("sim: write: %w", err)
				return werr
			}
		}
		return nil
	}, func(dropped []byte, err error) {
		l.count(func(s *Stats) { s.BadFrames++ })
		l.Log.Debug("sim: dropped byte", "err", err, "hex", hex.EncodeToString(dropped))
	})
	if err != nil && err != werr {
		err = fmt.Errorf("sim: read: %w", err)
	}
	return err
}

// answer returns the bytes to put on the line in reply to one frame.
func (l *Line) answer(frame, out, resp []byte, rnd *rand.Rand) []byte {
	f := &l.Faults
	unit, req := frame[0], frame[1:len(frame)-crc.Size]
	if f.Echo {
		out = append(out, frame...)
	}
	if l.Replay != nil {
		return l.replayAnswer(frame, out)
	}
	if unit == pdu.Broadcast {
		l.count(func(s *Stats) { s.Requests++; s.Broadcasts++ })
		for _, m := range l.Units {
			m.Handle(req, resp[:0])
		}
		return out
	}
	l.mu.Lock()
	l.seen[unit]++
	muted := l.muted[unit]
	if uf, ok := l.unitFaults[unit]; ok {
		f = &uf
	}
	l.mu.Unlock()
	m, ok := l.Units[unit]
	if !ok || muted {
		return out // not ours, or unplugged: stay silent, as a device on a shared line does
	}
	l.count(func(s *Stats) { s.Requests++ })
	if l.BeforeAnswer != nil {
		l.BeforeAnswer(unit, req, m)
	}
	resp = m.Handle(req, resp)
	if f.Drop > 0 && rnd.Float64() < f.Drop {
		l.count(func(s *Stats) { s.Dropped++ })
		return out
	}
	if f.Slow > 0 {
		time.Sleep(f.Slow)
	}
	if f.Late > 0 && rnd.Float64() < f.Late {
		l.count(func(s *Stats) { s.LateAnswers++ })
		time.Sleep(f.LateBy)
	}
	if f.Noise > 0 && rnd.Float64() < f.Noise {
		for range 1 + rnd.IntN(4) {
			out = append(out, byte(rnd.IntN(256)))
		}
	}
	start := len(out)
	out = rtu.AppendADU(out, unit, resp)
	if f.Corrupt > 0 && rnd.Float64() < f.Corrupt {
		l.count(func(s *Stats) { s.Corrupted++ })
		i := start + 1 + rnd.IntN(len(out)-start-1)
		if f.CRCOnly {
			i = len(out) - 1 - rnd.IntN(2)
		}
		out[i] ^= 1 << rnd.IntN(8)
	}
	l.count(func(s *Stats) { s.Answers++ })
	return out
}

func (l *Line) replayAnswer(frame, out []byte) []byte {
	key := string(frame[:len(frame)-crc.Size])
	answers, ok := l.Replay[key]
	l.count(func(s *Stats) { s.Requests++ })
	if !ok || len(answers) == 0 {
		return out
	}
	if l.replayed == nil {
		l.replayed = map[string]int{}
	}
	i := min(l.replayed[key], len(answers)-1)
	l.replayed[key]++
	if answers[i] == nil {
		l.count(func(s *Stats) { s.Dropped++ })
		return out
	}
	l.count(func(s *Stats) { s.Answers++ })
	return append(out, answers[i]...)
}
