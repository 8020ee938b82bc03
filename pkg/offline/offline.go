// Package offline isolates dead devices: a unit that has failed a number
// of transactions in a row is marked offline, and its requests are
// answered 0x0B at once without touching its serial line, except one
// probe request now and then that goes out as usual. The first answer
// puts the unit back online. So one device unplugged for maintenance and
// still polled by a SCADA does not hold its line for every poll, and the
// other devices on the line keep their pace.
package offline

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mcpgw/mcpgw/pkg/pdu"
	"github.com/mcpgw/mcpgw/pkg/tcp"
)

// Rule is the offline rule for one unit.
type Rule struct {
	Line  string        // the unit's line, for the log
	After int           // failed transactions in a row that make the unit offline; 0: never
	Probe time.Duration // the first wait between probes, doubling while the unit stays dead
	// Bound: the unit's line serves only requests bound to it
	// (tcp.Request.Via); others pass untouched, to be refused a route.
	Bound bool
}

// MaxProbeInterval is how far the wait between probes backs off (unless
// the rule's own Probe is longer).
const MaxProbeInterval = 60 * time.Second

// Handler applies the rules to requests on their way to Next, which must
// report each transaction's outcome on the tcp.Request (the gateway's
// router does): "ok" or "exception" (or empty) when the device answered,
// "timeout..." when it did not. Other outcomes (no route, line down, a
// full queue) say nothing of the device and change nothing.
type Handler struct {
	Next tcp.Handler
	Log  *slog.Logger

	rules  atomic.Pointer[[256]*rule] // replaced whole by SetRules
	byLine map[string]*counters       // each line's share of stats, made by SetRules; guarded by mu
	mu     sync.Mutex
	units  [256]unit
	skips  [256]func() bool // unit u offline: a request's Skip (tcp.Request), made once
	stats  counters
	now    func() time.Time // for tests
}

type unit struct {
	fails     int           // failed transactions in a row
	offline   bool          // answered 0x0B without touching the line, but for probes
	probing   bool          // a probe is on the line
	wait      time.Duration // between probes, doubling while the unit stays dead
	nextProbe time.Time     // the first request from then on goes out as a probe
}

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
func New(next tcp.Handler, log *slog.Logger) *Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	h := &Handler{Next: next, Log: log, now: time.Now, byLine: make(map[string]*counters)}
	h.rules.Store(&[256]*rule{})
	for u := range h.skips {
		h.skips[u] = func() bool { return h.Offline(byte(u)) }
	}
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
func (h *Handler) answerOffline(rule *rule, tr *tcp.Request, dst []byte) []byte {
	h.bump(rule, func(c *counters) *atomic.Uint64 { return &c.answered })
	tr.Line, tr.Outcome = rule.Line, "offline"
	return pdu.AppendException(dst, tr.PDU[0], pdu.GatewayTargetNoResponse)
}

// Offline reports whether unit u is offline now.
func (h *Handler) Offline(u byte) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.units[u].offline
}

// ServeModbus implements tcp.Handler.
func (h *Handler) ServeModbus(ctx context.Context, tr *tcp.Request, dst []byte) []byte {
	rule := h.rules.Load()[tr.Unit]
	if rule == nil || rule.After <= 0 || tr.Unit == pdu.Broadcast || rule.Bound && tr.Via == "" {
		tr.Skip = nil
		return h.Next.ServeModbus(ctx, tr, dst)
	}
	u := &h.units[tr.Unit]
	h.mu.Lock()
	probe := false
	if u.offline {
		if u.probing || h.now().Before(u.nextProbe) {
			h.mu.Unlock()
			return h.answerOffline(rule, tr, dst)
		}
		u.probing, probe = true, true
	}
	h.mu.Unlock()
	// A request that waits in the line's queue while its unit goes
	// offline is answered as the offline unit's are when its turn comes,
	// not sent: clients with requests queued for a unit that has just
	// died would otherwise hold the line for a timeout each. The probe
	// goes out whatever the unit's state.
	tr.Skip = h.skips[tr.Unit]
	if probe {
		tr.Skip = nil
	}

	out := h.Next.ServeModbus(ctx, tr, dst)
	if tr.Outcome == "skipped" { // it waited while the unit went offline
		return h.answerOffline(rule, tr, dst)
	}

	answered := tr.Outcome == "" || tcp.ByDevice(tr.Outcome)
	failed := strings.HasPrefix(tr.Outcome, "timeout")
	h.mu.Lock()
	defer h.mu.Unlock()
	if probe {
		u.probing = false
	}
	switch {
	case answered:
		if u.offline {
			u.offline = false
			h.bump(rule, func(c *counters) *atomic.Uint64 { return &c.online })
			h.Log.Info("unit back online", "unit", tr.Unit, "line", rule.Line, "trace", tr.Trace)
		}
		u.fails = 0
	case failed && u.offline:
		if probe {
			u.wait = min(2*u.wait, max(MaxProbeInterval, rule.Probe))
			u.nextProbe = h.now().Add(u.wait)
		}
	case failed:
		u.fails++
		if u.fails >= rule.After {
			u.offline, u.wait = true, rule.Probe
			u.nextProbe = h.now().Add(u.wait)
			h.bump(rule, func(c *counters) *atomic.Uint64 { return &c.offline })
			h.Log.Warn("unit offline: its requests are answered 0x0B at once, one probe at a time",
				"unit", tr.Unit, "line", rule.Line, "trace", tr.Trace, "failed_in_a_row", u.fails, "next_probe_in", u.wait)
		}
	}
	return out
}
