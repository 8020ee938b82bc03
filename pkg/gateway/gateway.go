// Package gateway is the bridge between Modbus TCP and RTU: it routes each
// request by unit id to the serial line that serves it, maps what happens
// there to an answer (the device's own, or a gateway exception), and logs
// one line per transaction.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mcpgw/mcpgw/pkg/pdu"
	"github.com/mcpgw/mcpgw/pkg/quirk"
	"github.com/mcpgw/mcpgw/pkg/request"
	"github.com/mcpgw/mcpgw/pkg/rtu"
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
	// Bound makes the route serve only requests bound to its line (a
	// slave line's, whose forward is the line), not every client's.
	Bound bool
	// Gap is the least silence before a frame to the unit; 0: the
	// line's frame gap.
	Gap time.Duration
	// Quirks, if set, are the device's: reads split, single writes in
	// the other form (package quirk).
	Quirks *quirk.Device
}

// Routes is a routing table: where each unit id goes, and the lines
// that take broadcasts; and, per line, the same for requests bound to
// that line (request.Request.Via: a slave line's forward). Fill one with Add and AddBroadcast, then hand it to
// SetRoutes; it is not changed after that.
type Routes struct {
	unit      [256]*Route
	broadcast []Line
	reach     []byte             // the unit ids a broadcast reaches: those routed to broadcast lines
	bound     map[string]*Routes // by line name
}

// Add sends requests for unit to r. A later route for the same unit
// replaces an earlier one.
func (t *Routes) Add(unit byte, r Route) {
	t.of(r.Line).unit[unit] = &r
	if !r.Bound {
		t.unit[unit] = &r
	}
}

// AddBroadcast sends unit 0 requests bound to line there too, and
// unless bound is set, every client's.
func (t *Routes) AddBroadcast(line Line, bound bool) {
	t.of(line).broadcast = []Line{line}
	if !bound {
		t.broadcast = append(t.broadcast, line)
	}
}

// of returns the table of requests bound to line.
func (t *Routes) of(line Line) *Routes {
	if t.bound == nil {
		t.bound = make(map[string]*Routes)
	}
	b := t.bound[line.Name()]
	if b == nil {
		b = &Routes{}
		t.bound[line.Name()] = b
	}
	return b
}

// seal works out what each table's broadcasts reach.
func (t *Routes) seal() {
	t.reach = t.reach[:0]
	for u := 1; u <= pdu.MaxUnit; u++ {
		if r := t.unit[u]; r != nil && slices.Contains(t.broadcast, r.Line) {
			t.reach = append(t.reach, byte(u))
		}
	}
	for _, b := range t.bound {
		b.seal()
	}
}

// table returns the routes for tr: its line's if it is bound to one.
func (t *Routes) table(tr *request.Request) *Routes {
	if tr.Via == "" {
		return t
	}
	if b := t.bound[tr.Via]; b != nil {
		return b
	}
	return &Routes{} // a line that is gone: no route
}

// Gateway implements request.Handler: the router, last in the chain of
// handlers (see Service). It reports each transaction's line, outcome
// and attempts on the request.Request, for LogTransactions.
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
func (g *Gateway) SetRoutes(t *Routes) {
	t.seal()
	g.routes.Store(t)
}

// BroadcastReach returns the unit ids, as clients address them, that a
// broadcast request tr would reach: those routed to the lines it would
// go out on. The access rules judge a broadcast by them.
func (g *Gateway) BroadcastReach(tr *request.Request) []byte {
	return g.routes.Load().table(tr).reach
}

// SetPriorityClients puts the requests of clients in these networks in
// their line's priority class, with writes.
func (g *Gateway) SetPriorityClients(nets []netip.Prefix) { g.priority.Store(&nets) }

// prioritized reports whether a request goes before plain reads: writes
// (FC 5, 6, 15, 16, 21, 22, 23) and the requests of priority clients.
func (g *Gateway) prioritized(tr *request.Request) bool {
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

// ServeModbus answers one request (request.Handler). The answer is the
// device's own response, normal or exception, or one of the gateway's
// exceptions: 0x0A when no line serves the unit or the line is down,
// 0x0B when the device did not answer in time (or the request's Skip
// said, when its turn came, that it need not go out), 0x06 when the
// line's queue is full. Broadcasts get no answer.
func (g *Gateway) ServeModbus(ctx context.Context, tr *request.Request, dst []byte) []byte {
	routes := g.routes.Load().table(tr)
	if tr.Unit == pdu.Broadcast {
		g.doBroadcast(ctx, tr, routes.broadcast)
		return nil
	}
	route := routes.unit[tr.Unit]
	if route == nil {
		tr.Outcome = request.NoRoute
		return pdu.AppendException(dst, tr.PDU[0], pdu.GatewayPathUnavailable)
	}
	if route.Quirks != nil {
		return g.serveQuirky(ctx, tr, route, dst)
	}
	return g.transact(ctx, tr, route, tr.PDU, dst)
}

// transact sends req (tr's PDU, or a part of it) to route's line as one
// transaction, and appends the answer: the device's, or the gateway's
// exception under req's function code.
func (g *Gateway) transact(ctx context.Context, tr *request.Request, route *Route, req, dst []byte) []byte {
	fc := req[0]
	r := g.pool.Get().(*rtu.Request)
	defer g.pool.Put(r)
	r.Unit, r.PDU, r.Timeout, r.Retries, r.Trace, r.Gap = tr.Unit, req, route.Timeout, route.Retries, tr.Trace, route.Gap
	if route.Unit != 0 {
		r.Unit = route.Unit // the answer goes back under the client's id: the server's
	}
	r.Priority, r.Background, r.Skip = g.prioritized(tr), tr.Background, tr.Skip
	r.Flow, r.Unknown, r.Probe = flowOf(tr), tr.Unknown, tr.Probe
	route.Line.Do(ctx, r)
	tr.Line, tr.Attempts = route.Line.Name(), tr.Attempts+r.Attempts

	var exc pdu.Exception
	switch r.Outcome {
	case rtu.OK:
		return append(dst, r.Resp...)
	case rtu.Timeout, rtu.Expired, rtu.Skipped, rtu.OverBudget:
		exc = pdu.GatewayTargetNoResponse
	case rtu.QueueFull:
		exc = pdu.ServerDeviceBusy
	default: // rtu.LineDown
		exc = pdu.GatewayPathUnavailable
	}
	tr.Outcome = outcomes[r.Outcome]
	if r.Outcome == rtu.Timeout && r.Err != nil && r.Err != rtu.ErrNoAnswer {
		tr.Err = r.Err // what was heard: for the log
	}
	return pdu.AppendException(dst, fc, exc)
}

// serveQuirky answers tr for a device with quirks: a read larger than
// the device takes goes out in parts, one after the other, and their
// answers are joined into one; a single write the device lacks goes in
// its other form. A part that fails fails the whole: the client gets
// that part's exception (the device's, or the gateway's), never a
// partial answer. The parts are transactions of their own, so other
// clients' requests may come between them: a split read is not atomic.
func (g *Gateway) serveQuirky(ctx context.Context, tr *request.Request, route *Route, dst []byte) []byte {
	q := route.Quirks
	if parts := q.Split(tr.PDU); parts != nil {
		answers := make([][]byte, len(parts))
		unknown, probe := tr.Unknown, tr.Probe
		defer func() { tr.Unknown, tr.Probe = unknown, probe }()
		for i, p := range parts {
			a := g.transact(ctx, tr, route, p, nil)
			if _, exc := pdu.IsException(a); exc {
				return append(dst, a...)
			}
			answers[i] = a
			// The device has answered: the rest are to a unit known to.
			tr.Unknown, tr.Probe = false, false
		}
		joined, err := q.Join(tr.PDU, answers)
		if err != nil { // the line checked each part: not expected
			tr.Outcome, tr.Err = request.Timeout, err
			return pdu.AppendException(dst, tr.PDU[0], pdu.GatewayTargetNoResponse)
		}
		return append(dst, joined...)
	}
	if dev, ok := q.Rewrite(tr.PDU); ok {
		return append(dst, quirk.Restore(tr.PDU, g.transact(ctx, tr, route, dev, nil))...)
	}
	return g.transact(ctx, tr, route, tr.PDU, dst)
}

// outcomes are the line's outcomes as the request's.
var outcomes = [...]request.Outcome{
	rtu.OK: request.OK, rtu.Sent: request.Broadcast, rtu.Timeout: request.Timeout, rtu.LineDown: request.LineDown,
	rtu.QueueFull: request.QueueFull, rtu.Expired: request.Expired, rtu.Skipped: request.Skipped, rtu.OverBudget: request.OverBudget,
}

// flowOf is whose share of the line's time a request is: its
// connection's, or for the gateway's own requesters (which have none),
// one per requester. Flows 1 and up are connections (tcp.Server numbers
// them from 1); the others count down from the top.
func flowOf(tr *request.Request) uint64 {
	if tr.ConnID != 0 {
		return tr.ConnID
	}
	h := uint64(14695981039346656037) // FNV-1a of the requester's name
	for i := 0; i < len(tr.Client); i++ {
		h = (h ^ uint64(tr.Client[i])) * 1099511628211
	}
	return h | 1<<63
}

// errBroadcastOff is the detail of a broadcast no line takes.
var errBroadcastOff = errors.New("broadcast is off on every line")

func (g *Gateway) doBroadcast(ctx context.Context, tr *request.Request, lines []Line) {
	if len(lines) == 0 {
		tr.Outcome, tr.Err = request.NoRoute, errBroadcastOff
		return
	}
	r := g.pool.Get().(*rtu.Request)
	defer g.pool.Put(r)
	names := make([]string, 0, len(lines))
	tr.Outcome = request.Broadcast
	for _, line := range lines {
		r.Unit, r.PDU, r.Timeout, r.Retries, r.Priority, r.Trace, r.Skip = pdu.Broadcast, tr.PDU, 0, 0, true, tr.Trace, nil
		r.Flow, r.Unknown, r.Probe, r.Background = flowOf(tr), false, false, false
		line.Do(ctx, r)
		names = append(names, line.Name())
		tr.Attempts += r.Attempts
		if r.Outcome != rtu.Sent {
			tr.Outcome, tr.Err = outcomes[r.Outcome], fmt.Errorf("on line %s", line.Name())
		}
	}
	tr.Line = strings.Join(names, ",")
}
