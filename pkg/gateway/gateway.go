// Package gateway is the bridge between Modbus TCP and RTU: it routes each
// request by unit id to the serial line that serves it, maps what happens
// there to an answer (the device's own, or a gateway exception), and logs
// one line per transaction.
package gateway

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/mcpgw/mcpgw/pkg/pdu"
	"github.com/mcpgw/mcpgw/pkg/rtu"
	"github.com/mcpgw/mcpgw/pkg/tcp"
)

// Line is what the gateway needs of a serial line; *rtu.Bus is one.
type Line interface {
	Name() string
	Do(ctx context.Context, r *rtu.Request)
}

// Route says where a unit id goes, and how long to wait for it.
type Route struct {
	Line    Line
	Timeout time.Duration // per attempt; 0: the line's default
	Retries int           // <0: the line's default
}

// Gateway implements tcp.Handler. Build it with New and AddRoute before
// serving; it is read-only after that.
type Gateway struct {
	routes    [256]*Route
	broadcast []Line
	log       *slog.Logger
	pool      sync.Pool
}

// New returns a gateway with no routes. A nil log discards.
func New(log *slog.Logger) *Gateway {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	g := &Gateway{log: log}
	g.pool.New = func() any { return &rtu.Request{Resp: make([]byte, 0, pdu.MaxSize)} }
	return g
}

// AddRoute sends requests for unit to r. A later route for the same unit
// replaces an earlier one.
func (g *Gateway) AddRoute(unit byte, r Route) { g.routes[unit] = &r }

// AddBroadcast sends unit 0 requests on line too.
func (g *Gateway) AddBroadcast(line Line) { g.broadcast = append(g.broadcast, line) }

// ServeModbus answers one request (tcp.Handler). The answer is the
// device's own response, normal or exception, or one of the gateway's
// exceptions: 0x0A when no line serves the unit or the line is down,
// 0x0B when the device did not answer in time, 0x06 when the line's queue
// is full. Broadcasts get no answer.
func (g *Gateway) ServeModbus(ctx context.Context, tr *tcp.Request, dst []byte) []byte {
	start := time.Now()
	fc := tr.PDU[0]
	if tr.Unit == pdu.Broadcast {
		g.doBroadcast(ctx, tr, start)
		return nil
	}
	route := g.routes[tr.Unit]
	if route == nil {
		g.logTx(tr, "", "no route", pdu.GatewayPathUnavailable, 0, start)
		return pdu.AppendException(dst, fc, pdu.GatewayPathUnavailable)
	}
	r := g.pool.Get().(*rtu.Request)
	defer g.pool.Put(r)
	r.Unit, r.PDU, r.Timeout, r.Retries = tr.Unit, tr.PDU, route.Timeout, route.Retries
	route.Line.Do(ctx, r)

	var exc pdu.Exception
	switch r.Outcome {
	case rtu.OK:
		dst = append(dst, r.Resp...)
		if e, ok := pdu.IsException(r.Resp); ok {
			g.logTx(tr, route.Line.Name(), "exception", e, r.Attempts, start)
		} else {
			g.logTx(tr, route.Line.Name(), "ok", 0, r.Attempts, start)
		}
		return dst
	case rtu.Timeout, rtu.Expired:
		exc = pdu.GatewayTargetNoResponse
	case rtu.QueueFull:
		exc = pdu.ServerDeviceBusy
	default: // rtu.LineDown
		exc = pdu.GatewayPathUnavailable
	}
	outcome := r.Outcome.String()
	if r.Outcome == rtu.Timeout && r.Err != nil && r.Err != rtu.ErrNoAnswer {
		outcome = "timeout: " + r.Err.Error()
	}
	g.logTx(tr, route.Line.Name(), outcome, exc, r.Attempts, start)
	return pdu.AppendException(dst, fc, exc)
}

func (g *Gateway) doBroadcast(ctx context.Context, tr *tcp.Request, start time.Time) {
	r := g.pool.Get().(*rtu.Request)
	defer g.pool.Put(r)
	for _, line := range g.broadcast {
		r.Unit, r.PDU, r.Timeout, r.Retries = pdu.Broadcast, tr.PDU, 0, 0
		line.Do(ctx, r)
		g.logTx(tr, line.Name(), r.Outcome.String(), 0, r.Attempts, start)
	}
	if len(g.broadcast) == 0 {
		g.logTx(tr, "", "broadcast disabled on every line", 0, 0, start)
	}
}

// logTx writes the transaction log line: at info, so the default
// configuration logs every transaction.
func (g *Gateway) logTx(tr *tcp.Request, line, outcome string, exc pdu.Exception, attempts int, start time.Time) {
	if !g.log.Enabled(context.Background(), slog.LevelInfo) {
		return
	}
	attrs := make([]slog.Attr, 0, 10)
	attrs = append(attrs,
		slog.Int("unit", int(tr.Unit)),
		slog.Int("fc", int(tr.PDU[0])),
		slog.String("client", tr.Client),
		slog.Int("tid", int(tr.TID)),
		slog.String("line", line),
		slog.String("outcome", outcome),
	)
	if exc != 0 {
		attrs = append(attrs, slog.Int("exception", int(exc)))
	}
	attrs = append(attrs, slog.Int("attempts", attempts), slog.Duration("duration", time.Since(start)))
	g.log.LogAttrs(context.Background(), slog.LevelInfo, "transaction", attrs...)
}
