// Package gateway is the bridge between Modbus TCP and RTU: it routes each
// request by unit id to the serial line that serves it, maps what happens
// there to an answer (the device's own, or a gateway exception), and logs
// one line per transaction.
package gateway

import (
	"context"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
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
	Unit    byte          // the unit id on the line (unit_map); 0: the client's
	Timeout time.Duration // per attempt; 0: the line's default
	Retries int           // <0: the line's default
}

// Routes is a routing table: where each unit id goes, and the lines
// that take broadcasts. Fill one with Add and AddBroadcast, then hand it
// to SetRoutes; it is not changed after that.
type Routes struct {
	unit      [256]*Route
	broadcast []Line
}

// Add sends requests for unit to r. A later route for the same unit
// replaces an earlier one.
func (t *Routes) Add(unit byte, r Route) { t.unit[unit] = &r }

// AddBroadcast sends unit 0 requests on line too.
func (t *Routes) AddBroadcast(line Line) { t.broadcast = append(t.broadcast, line) }

// Gateway implements tcp.Handler: the router, last in the chain of
// handlers (see Service). It reports each transaction's line, outcome
// and attempts on the tcp.Request, for LogTransactions.
type Gateway struct {
	routes   atomic.Pointer[Routes]         // replaced whole on reload
	priority atomic.Pointer[[]netip.Prefix] // replaced whole on reload
	pool     sync.Pool
}

// New returns a gateway with no routes.
func New() *Gateway {
	g := &Gateway{}
	g.routes.Store(&Routes{})
	g.pool.New = func() any { return &rtu.Request{Resp: make([]byte, 0, pdu.MaxSize)} }
	return g
}

// SetRoutes replaces the routing table; safe while serving (a reload). A
// request already routed finishes on its line.
func (g *Gateway) SetRoutes(t *Routes) { g.routes.Store(t) }

// SetPriorityClients puts the requests of clients in these networks in
// their line's priority class, with writes.
func (g *Gateway) SetPriorityClients(nets []netip.Prefix) { g.priority.Store(&nets) }

// prioritized reports whether a request goes before plain reads: writes
// (FC 5, 6, 15, 16, 21, 22, 23) and the requests of priority clients.
func (g *Gateway) prioritized(tr *tcp.Request) bool {
	if pdu.IsWrite(tr.PDU[0]) {
		return true
	}
	nets := g.priority.Load()
	if nets == nil {
		return false
	}
	for _, n := range *nets {
		if n.Contains(tr.Addr.Addr()) {
			return true
		}
	}
	return false
}

// ServeModbus answers one request (tcp.Handler). The answer is the
// device's own response, normal or exception, or one of the gateway's
// exceptions: 0x0A when no line serves the unit or the line is down,
// 0x0B when the device did not answer in time (or the request's Skip
// said, when its turn came, that it need not go out), 0x06 when the
// line's queue is full. Broadcasts get no answer.
func (g *Gateway) ServeModbus(ctx context.Context, tr *tcp.Request, dst []byte) []byte {
	fc := tr.PDU[0]
	if tr.Unit == pdu.Broadcast {
		g.doBroadcast(ctx, tr, g.routes.Load().broadcast)
		return nil
	}
	routes := g.routes.Load()
	route := routes.unit[tr.Unit]
	if route == nil {
		tr.Outcome = "no route"
		return pdu.AppendException(dst, fc, pdu.GatewayPathUnavailable)
	}
	r := g.pool.Get().(*rtu.Request)
	defer g.pool.Put(r)
	r.Unit, r.PDU, r.Timeout, r.Retries, r.Trace = tr.Unit, tr.PDU, route.Timeout, route.Retries, tr.Trace
	if route.Unit != 0 {
		r.Unit = route.Unit // the answer goes back under the client's id: the server's
	}
	r.Priority, r.Background, r.Skip = g.prioritized(tr), tr.Background, tr.Skip
	route.Line.Do(ctx, r)
	tr.Line, tr.Attempts = route.Line.Name(), r.Attempts

	var exc pdu.Exception
	switch r.Outcome {
	case rtu.OK:
		return append(dst, r.Resp...)
	case rtu.Timeout, rtu.Expired, rtu.Skipped:
		exc = pdu.GatewayTargetNoResponse
	case rtu.QueueFull:
		exc = pdu.ServerDeviceBusy
	default: // rtu.LineDown
		exc = pdu.GatewayPathUnavailable
	}
	tr.Outcome = r.Outcome.String()
	if r.Outcome == rtu.Timeout && r.Err != nil && r.Err != rtu.ErrNoAnswer {
		tr.Outcome = "timeout: " + r.Err.Error()
	}
	return pdu.AppendException(dst, fc, exc)
}

func (g *Gateway) doBroadcast(ctx context.Context, tr *tcp.Request, lines []Line) {
	if len(lines) == 0 {
		tr.Outcome = "broadcast disabled on every line"
		return
	}
	r := g.pool.Get().(*rtu.Request)
	defer g.pool.Put(r)
	names := make([]string, 0, len(lines))
	tr.Outcome = rtu.Sent.String()
	for _, line := range lines {
		r.Unit, r.PDU, r.Timeout, r.Retries, r.Priority, r.Trace, r.Skip = pdu.Broadcast, tr.PDU, 0, 0, true, tr.Trace, nil
		line.Do(ctx, r)
		names = append(names, line.Name())
		tr.Attempts += r.Attempts
		if r.Outcome != rtu.Sent {
			tr.Outcome = r.Outcome.String() + " on " + line.Name()
		}
	}
	tr.Line = strings.Join(names, ",")
}
