// Package slaveline is the gateway in reverse: on a [[slave_line]] it is
// an RTU slave, polled by a serial master (an old HMI panel on RS-485),
// and forwards each request for its units to where they are served (a
// line of the gateway's, or a Modbus TCP device), answering on the
// serial line within the master's timeout.
//
// An RTU slave does not answer what it cannot serve: the gateway's
// exceptions 0x0A and 0x0B become silence, as does an answer that comes
// too late (after the master's timeout it would collide with the
// master's next request). A device's other exceptions pass through.
// Requests for other units are left to the other slaves on the line.
//
// One goroutine owns the port, as for every line; requests go into the
// gateway's chain of handlers, so the access rules, the cache, shared
// reads, the offline rule and the transaction log apply.
package slaveline

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/mcpgw/mcpgw/pkg/crc"
	"github.com/mcpgw/mcpgw/pkg/pdu"
	"github.com/mcpgw/mcpgw/pkg/request"
	"github.com/mcpgw/mcpgw/pkg/rtu"
	"github.com/mcpgw/mcpgw/pkg/tcp"
	"github.com/mcpgw/mcpgw/pkg/trace"
)

// Role is the role a slave line's requests carry, for the access rules:
// they come from no network address, so only rules without sources, or
// with roles = ["slave_line"], match them.
const Role = "slave_line"

// Config is one slave line.
type Config struct {
	Name     string
	Open     func() (rtu.Port, error)
	FrameGap time.Duration   // t3.5: silence that ends a request
	Units    []byte          // the units the gateway answers for here
	Forward  string          // the line its requests go to, whatever their unit (request.Request.Via)
	Timeout  time.Duration   // the master's: answers later than this are not sent
	Handler  request.Handler // where requests go: the gateway's chain
	Log      *slog.Logger
}

// Stats count a slave line's work.
type Stats struct {
	Requests  uint64 // requests for its units
	Answered  uint64 // answers sent
	Silent    uint64 // requests the gateway could not serve (0x0A, 0x0B): no answer
	Late      uint64 // answers that came after the master's timeout: not sent
	BadFrames uint64 // bytes dropped: broken frames, noise
}

// Line serves a serial master.
type Line struct {
	cfg                                         Config
	units                                       [256]bool
	requests, answered, silent, late, badFrames atomic.Uint64
}

// Stats returns the counters; safe from any goroutine.
func (l *Line) Stats() Stats {
	return Stats{l.requests.Load(), l.answered.Load(), l.silent.Load(), l.late.Load(), l.badFrames.Load()}
}

// Name returns the slave line's name.
func (l *Line) Name() string { return l.cfg.Name }

// New returns a slave line; run it with Run.
func New(cfg Config) *Line {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.FrameGap <= 0 {
		cfg.FrameGap = 1750 * time.Microsecond
	}
	l := &Line{cfg: cfg}
	for _, u := range cfg.Units {
		l.units[u] = true
	}
	return l
}

// Run opens the port (again, with backoff, while it fails) and serves
// the master until ctx ends.
func (l *Line) Run(ctx context.Context) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		p, err := l.cfg.Open()
		if err != nil {
			l.cfg.Log.Warn("slave line down, retrying", "slave_line", l.cfg.Name, "err", err, "retry_in", backoff)
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 3*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
		l.cfg.Log.Info("slave line up", "slave_line", l.cfg.Name)
		err = l.serve(ctx, p)
		p.Close()
		if err != nil && ctx.Err() == nil {
			l.cfg.Log.Error("slave line failed, reopening", "slave_line", l.cfg.Name, "err", err)
		}
	}
}

// serve reads requests and answers them until ctx ends or the port
// fails.
func (l *Line) serve(ctx context.Context, p rtu.Port) error {
	out := make([]byte, 0, tcp.MaxADU)
	p.ResetInputBuffer()
	return rtu.ReadRequests(ctx, p, l.cfg.FrameGap,
		func(frame []byte, end time.Time) error { return l.answer(ctx, p, frame, end, out) },
		func([]byte, error) { l.badFrames.Add(1) })
}

// answer serves one request frame: forwarded through the chain, answered
// if it is the device's answer and comes in time.
func (l *Line) answer(ctx context.Context, p rtu.Port, frame []byte, end time.Time, out []byte) error {
	unit, req := frame[0], frame[1:len(frame)-2]
	if unit != pdu.Broadcast && !l.units[unit] {
		return nil // another slave's
	}
	l.requests.Add(1)
	tr := &request.Request{Unit: unit, PDU: req, Client: "slave_line " + l.cfg.Name, Role: Role, Via: l.cfg.Forward, Trace: trace.Next()}
	answer := l.cfg.Handler.ServeModbus(ctx, tr, out[:1])
	if answer == nil { // a broadcast
		return nil
	}
	if e, ok := pdu.IsException(answer[1:]); ok && (e == pdu.GatewayPathUnavailable || e == pdu.GatewayTargetNoResponse) {
		l.silent.Add(1)
		return nil // an RTU slave does not answer what it cannot serve
	}
	if l.cfg.Timeout > 0 && time.Since(end) > l.cfg.Timeout {
		l.late.Add(1)
		l.cfg.Log.Warn("answer too late for the master, not sent", "slave_line", l.cfg.Name, "unit", unit, "trace", tr.Trace,
			"took", time.Since(end).Round(time.Millisecond), "timeout", l.cfg.Timeout)
		return nil
	}
	if d := l.cfg.FrameGap - time.Since(end); d > 0 {
		time.Sleep(d) // t3.5 after the request before answering
	}
	answer[0] = unit
	answer = crc.Append(answer, crc.Checksum(answer))
	if _, err := p.Write(answer); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	l.answered.Add(1)
	return nil
}
