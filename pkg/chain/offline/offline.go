// Package offline keeps absent and dead devices from costing their line
// more than the evidence requires. Each unit is in one of three states:
//
//   - unseen: it has not answered since the gateway started (or since
//     its rule was set). Its requests go out one at a time, each marked
//     Unknown for the line (one attempt, its silence taken from the
//     line's budget); requests that arrive meanwhile wait for it. One
//     attempt that hears nothing is the evidence: the unit is offline.
//   - online: it has answered. It goes offline after After failed
//     transactions in a row, so that one dropped answer never takes a
//     live device offline.
//   - offline: its requests are answered 0x0B at once without touching
//     the line, except one probe every Probe interval, a single attempt
//     marked Unknown. Its first answer puts it online again.
//
// A request the line's silence budget has no room for is answered 0x0B
// at once and changes nothing: the next one tries again. So a device
// unplugged for maintenance, or configured but never installed, and
// still polled by a SCADA does not hold its line, and the other devices
// on the line keep their pace.
package offline

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mcpgw/mcpgw/pkg/pdu"
	"github.com/mcpgw/mcpgw/pkg/request"
)

// Rule is the offline rule for one unit.
type Rule struct {
	Line  string        // the unit's line, for the log
	After int           // failed transactions in a row that make an online unit offline; 0: the rule is off
	Probe time.Duration // between probes of an offline unit
	// Bound: the unit's line serves only requests bound to it
	// (request.Request.Via); others pass untouched, to be refused a route.
	Bound bool
}

// Handler applies the rules to requests on their way to Next, which must
// report each transaction's outcome on the request.Request (the gateway's
// router does): OK or Exception (or Pending) when the device answered,
// Timeout when it did not (with Err nil if nothing at all was heard, the
// broken answer otherwise). Other outcomes (no route, line down, a full
// queue, over budget) say nothing of the device and change nothing.
type Handler struct {
	Next request.Handler
	Log  *slog.Logger

	rules  atomic.Pointer[[256]*rule] // replaced whole by SetRules
	byLine map[string]*counters       // each line's share of stats, made by SetRules; guarded by mu
	mu     sync.Mutex
	units  [256]unit
	since  [256]time.Time   // when each offline unit went offline
	skips  [256]func() bool // unit u offline: a request's Skip (request.Request), made once
	stats  counters
	now    func() time.Time // for tests
}

type unit struct {
	seen      bool          // it has answered since its rule was set (or since it went offline)
	fails     int           // failed transactions in a row
	offline   bool          // answered 0x0B without touching the line, but for probes
	probing   chan struct{} // a probe (Unknown) is on its way to the line; closed when it ends
	nextProbe time.Time     // the first request from then on goes out as a probe
}

// State is what the rule knows of a unit.
type State uint8

const (
	Unseen  State = iota // not answered since its rule was set
	Online               // answered
	Offline              // found absent or dead: answered 0x0B at once, one probe at a time
)

var stateNames = [...]string{"unseen", "online", "offline"}

func (s State) String() string { return stateNames[s] }

type counters struct{ offline, online, answered atomic.Uint64 }

// rule is a unit's Rule and its line's counters.
type rule struct {
	Rule
	line *counters
}

// Stats count the rule's work.
type Stats struct {
	WentOffline uint64 // units marked offline
	CameBack    uint64 // units back online
	Answered    uint64 // requests answered 0x0B without touching the line
}

// New returns a handler with no rules; set them with SetRules.
func New(log *slog.Logger) *Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	h := &Handler{Log: log, now: time.Now, byLine: make(map[string]*counters)}
	h.rules.Store(&[256]*rule{})
	for u := range h.skips {
		h.skips[u] = func() bool { return h.Offline(byte(u)) }
	}
	return h
}

// Middleware puts h in front of next, in the chain.
func (h *Handler) Middleware(next request.Handler) request.Handler {
	h.Next = next
	return h
}

// SetRules replaces every unit's rule; units not in rules have none. It
// is safe while serving (a reload). A unit keeps its state (offline, its
// failures in a row) while its rule stays on the same line; one that
// moves to another line, or loses its rule, starts afresh.
func (h *Handler) SetRules(rules map[byte]Rule) {
	h.mu.Lock()
	defer h.mu.Unlock()
	old, next := h.rules.Load(), new([256]*rule)
	for u, r := range rules {
		c := h.byLine[r.Line]
		if c == nil {
			c = &counters{}
			h.byLine[r.Line] = c
		}
		next[u] = &rule{r, c}
	}
	for u := range next {
		if old[u] != nil && (next[u] == nil || next[u].Line != old[u].Line) {
			h.units[u] = unit{}
		}
	}
	h.rules.Store(next)
}

// SetRule sets unit u's rule, keeping the others.
func (h *Handler) SetRule(u byte, r Rule) {
	rules := map[byte]Rule{u: r}
	for v, o := range h.rules.Load() {
		if o != nil && byte(v) != u {
			rules[byte(v)] = o.Rule
		}
	}
	h.SetRules(rules)
}

// LineStats returns the counters of the units on line.
func (h *Handler) LineStats(line string) Stats {
	h.mu.Lock()
	c := h.byLine[line]
	h.mu.Unlock()
	if c == nil {
		return Stats{}
	}
	return Stats{c.offline.Load(), c.online.Load(), c.answered.Load()}
}

// bump adds one to a counter, for all lines and for r's line.
func (h *Handler) bump(r *rule, pick func(*counters) *atomic.Uint64) {
	pick(&h.stats).Add(1)
	pick(r.line).Add(1)
}

// Stats returns the counters; safe from any goroutine.
func (h *Handler) Stats() Stats {
	return Stats{h.stats.offline.Load(), h.stats.online.Load(), h.stats.answered.Load()}
}

// answerOffline answers tr as an offline unit's request: 0x0B, without
// touching the line.
func (h *Handler) answerOffline(rule *rule, tr *request.Request, dst []byte) []byte {
	h.bump(rule, func(c *counters) *atomic.Uint64 { return &c.answered })
	tr.Line = rule.Line
	return tr.Refuse(dst, request.Offline, pdu.GatewayTargetNoResponse)
}

// Offline reports whether unit u is offline now.
func (h *Handler) Offline(u byte) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.units[u].offline
}

// Unit is a configured unit and what the rule knows of it, for the
// status page and the metrics.
type Unit struct {
	Line  string
	Unit  byte
	State State
	Since time.Time // when it went offline
}

// State returns what the rule knows of unit u, and since when it has
// been offline (zero unless it is).
func (h *Handler) State(u byte) (State, time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	x := &h.units[u]
	switch {
	case x.offline:
		return Offline, h.since[u]
	case x.seen:
		return Online, time.Time{}
	}
	return Unseen, time.Time{}
}

// ServeModbus implements request.Handler.
func (h *Handler) ServeModbus(ctx context.Context, tr *request.Request, dst []byte) []byte {
	rule := h.rules.Load()[tr.Unit]
	if rule == nil || rule.After <= 0 || tr.Unit == pdu.Broadcast || rule.Bound && tr.Via == "" {
		tr.Skip, tr.Unknown, tr.Probe = nil, false, false
		out := h.Next.ServeModbus(ctx, tr, dst)
		if rule != nil && rule.After <= 0 && (tr.Outcome == request.Pending || tr.Outcome.ByDevice()) {
			h.mu.Lock() // the rule is off, but the unit's state is shown
			h.units[tr.Unit].seen = true
			h.mu.Unlock()
		}
		return out
	}
	u := &h.units[tr.Unit]
	h.mu.Lock()
	probe, offlineProbe := false, false
	for !probe && !u.seen && !u.offline {
		if u.probing == nil { // an unseen unit: this request finds out
			u.probing, probe = make(chan struct{}), true
			break
		}
		// Another request is finding out: wait for what it learns.
		wait := u.probing
		h.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			tr.Line = rule.Line
			return tr.Refuse(dst, request.Expired, pdu.GatewayTargetNoResponse)
		}
		h.mu.Lock()
	}
	if u.offline {
		if u.probing != nil || h.now().Before(u.nextProbe) {
			h.mu.Unlock()
			return h.answerOffline(rule, tr, dst)
		}
		u.probing, probe, offlineProbe = make(chan struct{}), true, true
	}
	mine := u.probing
	h.mu.Unlock()
	// A request that waits in the line's queue while its unit goes
	// offline is answered as the offline unit's are when its turn comes,
	// not sent: clients with requests queued for a unit that has just
	// died would otherwise hold the line for a timeout each. The probe
	// goes out whatever the unit's state.
	tr.Skip, tr.Unknown, tr.Probe = h.skips[tr.Unit], probe, offlineProbe
	if probe {
		tr.Skip = nil
	}

	out := h.Next.ServeModbus(ctx, tr, dst)
	if tr.Outcome == request.Skipped { // it waited while the unit went offline
		return h.answerOffline(rule, tr, dst)
	}

	answered := tr.Outcome == request.Pending || tr.Outcome.ByDevice()
	failed := tr.Outcome == request.Timeout
	silent := failed && tr.Err == nil // nothing heard: a broken answer is a device there
	h.mu.Lock()
	defer h.mu.Unlock()
	if probe {
		close(mine)
		if u.probing == mine { // (a reload that moved the unit has reset it)
			u.probing = nil
		}
	}
	switch {
	case answered:
		if u.offline {
			u.offline = false
			h.bump(rule, func(c *counters) *atomic.Uint64 { return &c.online })
			h.Log.Info("unit back online", "unit", tr.Unit, "line", rule.Line, "trace", tr.Trace)
		}
		u.seen, u.fails = true, 0
	case probe && u.offline && failed:
		u.nextProbe = h.now().Add(rule.Probe)
	case probe && silent:
		// Never heard since its rule was set: one attempt that hears
		// nothing is the evidence.
		h.goOffline(rule, u, tr, 1, "unit not found: no answer to its first request; its requests are answered 0x0B at once, one probe at a time")
	case failed:
		if !silent {
			u.seen = true // a broken answer: the device is there
		}
		u.fails++
		if u.seen && u.fails >= rule.After {
			h.goOffline(rule, u, tr, u.fails, "unit offline: its requests are answered 0x0B at once, one probe at a time")
		}
	}
	return out
}

// goOffline marks u offline; its first probe is Probe from now. h.mu is
// held.
func (h *Handler) goOffline(rule *rule, u *unit, tr *request.Request, fails int, msg string) {
	u.offline, u.seen, u.fails = true, false, 0
	u.nextProbe = h.now().Add(rule.Probe)
	h.since[tr.Unit] = h.now()
	h.bump(rule, func(c *counters) *atomic.Uint64 { return &c.offline })
	h.Log.Warn(msg, "unit", tr.Unit, "line", rule.Line, "trace", tr.Trace, "failed_in_a_row", fails, "next_probe_in", rule.Probe)
}
