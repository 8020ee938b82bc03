// Package cache answers reads from the values the line returned lately.
// Each unit's rule says how old a value may be (cache_max_age); ranges
// that agent mode polls may be as old as their interval plus one
// transaction. A read (FC 1, 2, 3, 4) whose every address holds a value
// that young is answered at once, without the line; any other read goes
// to the line and its answer fills the cache. A device's exception is
// never cached. A request that may change the device (a write, or any
// code whose effect is unknown) clears the values it may touch once it
// is done, and a read that overlapped it in time fills nothing, so a
// client that writes and reads back sees its write. While a unit is
// offline its reads are not answered from the cache, unless its rule
// serves stale values.
package cache

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mcpgw/mcpgw/pkg/pdu"
	"github.com/mcpgw/mcpgw/pkg/request"
)

// Rule is one unit's caching.
type Rule struct {
	Line       string        // the unit's line, reported on answers from the cache
	MaxAge     time.Duration // a read is answered from values read at most this long ago; 0: only polled ranges
	ServeStale bool          // while the unit is offline, answer from values of any age
}

// Handler answers reads from the cache or passes them to Next, whose
// answers fill it. Answers from the cache report Outcome request.Cached.
type Handler struct {
	Next request.Handler
	// Offline reports whether a unit is offline now (the offline rule);
	// nil: never.
	Offline func(unit byte) bool

	rules atomic.Pointer[[256]*Rule] // replaced whole by SetRules
	mu    sync.Mutex
	pages map[pageKey]*page
	units [256]unitState
	hits  atomic.Uint64
	now   func() time.Time // for tests
}

// unitState tracks the requests that may change a unit, so that a read
// overlapping one in time does not fill the cache with a value from
// before it.
type unitState struct {
	writing int    // such requests under way
	gen     uint64 // bumped when one starts and when one ends
}

// A page holds 256 addresses of one table of one unit.
type pageKey struct {
	unit, table byte // table: the read's function code, 1 to 4
	base        uint16
}

type page struct {
	val  [256]uint16        // a bit is 0 or 1
	at   [256]int64         // when the value came back from the line, unix ns; 0: none
	keep [256]time.Duration // how old a polled value may be; 0: not polled
}

const pageSize = 256

// New returns a handler with no rules: nothing is cached until SetRules.
func New() *Handler {
	h := &Handler{pages: make(map[pageKey]*page), now: time.Now}
	h.rules.Store(&[256]*Rule{})
	return h
}

// Middleware puts h in front of next, in the chain.
func (h *Handler) Middleware(next request.Handler) request.Handler {
	h.Next = next
	return h
}

// SetRules sets every unit's rule; units not in rules are not cached.
// Safe while serving (a reload); the values cached stay.
func (h *Handler) SetRules(rules map[byte]Rule) {
	next := new([256]*Rule)
	for u, r := range rules {
		next[u] = &r
	}
	h.rules.Store(next)
}

// Hits returns how many reads were answered from the cache.
func (h *Handler) Hits() uint64 { return h.hits.Load() }

// ServeModbus implements request.Handler.
func (h *Handler) ServeModbus(ctx context.Context, tr *request.Request, dst []byte) []byte {
	fc, addr, qty, read := pdu.ParseRead(tr.PDU)
	if !read {
		return h.change(ctx, tr, dst)
	}
	rule := h.rules.Load()[tr.Unit]
	if rule == nil {
		return h.Next.ServeModbus(ctx, tr, dst)
	}
	offline := h.Offline != nil && h.Offline(tr.Unit)
	if offline && !rule.ServeStale {
		return h.Next.ServeModbus(ctx, tr, dst) // 0x0B from the offline rule
	}
	h.mu.Lock()
	out, ok := h.lookup(dst, tr.Unit, fc, addr, qty, rule.MaxAge, offline)
	h.mu.Unlock()
	if ok {
		h.hits.Add(1)
		tr.Line, tr.Outcome = rule.Line, request.Cached
		return out
	}
	return h.fetch(ctx, tr, dst, 0)
}

// Refresh sends read tr to the line whatever the cache holds (an agent
// poll), fills the cache with its answer, and marks the range as polled:
// its values may be keep old (or the rule's MaxAge, if longer) when they
// answer a read.
func (h *Handler) Refresh(ctx context.Context, tr *request.Request, dst []byte, keep time.Duration) []byte {
	if fc, addr, qty, ok := pdu.ParseRead(tr.PDU); ok {
		h.mu.Lock()
		h.each(tr.Unit, fc, addr, qty, func(p *page, i int) { p.keep[i] = keep })
		h.mu.Unlock()
	}
	return h.fetch(ctx, tr, dst, keep)
}

// Unpoll forgets every polled range (before a reload sets the new ones).
func (h *Handler) Unpoll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, p := range h.pages {
		p.keep = [256]time.Duration{}
	}
}

// fetch sends read tr to Next and fills the cache with the device's
// answer, unless a request that may change the unit overlapped it.
func (h *Handler) fetch(ctx context.Context, tr *request.Request, dst []byte, keep time.Duration) []byte {
	u := &h.units[tr.Unit]
	h.mu.Lock()
	gen, clean := u.gen, u.writing == 0
	h.mu.Unlock()
	out := h.Next.ServeModbus(ctx, tr, dst)
	if !clean || tr.Outcome != request.Pending || h.rules.Load()[tr.Unit] == nil && keep == 0 {
		return out // not the device's own answer to this request, or a write overlapped
	}
	fc, addr, qty, _ := pdu.ParseRead(tr.PDU)
	at := h.now().UnixNano()
	h.mu.Lock()
	if u.gen == gen {
		h.store(out[len(dst):], tr.Unit, fc, addr, qty, at)
	}
	h.mu.Unlock()
	return out
}

// change passes on a request that is not a read of FC 1-4 and, if it
// may change the device, clears the values it may touch when it is done.
func (h *Handler) change(ctx context.Context, tr *request.Request, dst []byte) []byte {
	addr, qty, all := pdu.Written(tr.PDU)
	if qty == 0 && !all {
		return h.Next.ServeModbus(ctx, tr, dst)
	}
	units := []byte{tr.Unit}
	if tr.Unit == pdu.Broadcast { // every unit takes it
		units = units[:0]
		for u := range 256 {
			units = append(units, byte(u))
		}
	}
	h.mu.Lock()
	for _, u := range units {
		h.units[u].writing++
		h.units[u].gen++
	}
	h.mu.Unlock()
	out := h.Next.ServeModbus(ctx, tr, dst)
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, u := range units {
		h.units[u].writing--
		h.units[u].gen++
		h.clear(u, addr, qty, all)
	}
	return out
}

// clear forgets unit u's values at [addr, addr+qty) in every table
// (devices alias them), or all of them.
func (h *Handler) clear(u byte, addr, qty uint16, all bool) {
	for k, p := range h.pages {
		if k.unit != u {
			continue
		}
		if all {
			p.at = [256]int64{}
			continue
		}
		lo, hi := max(int(addr), int(k.base)), min(int(addr)+int(qty), int(k.base)+pageSize)
		for a := lo; a < hi; a++ {
			p.at[a-int(k.base)] = 0
		}
	}
}

// each calls f for every address of a range, making its pages.
func (h *Handler) each(u, table byte, addr, qty uint16, f func(p *page, i int)) {
	for a := int(addr); a < int(addr)+int(qty); {
		k := pageKey{u, table, uint16(a &^ (pageSize - 1))}
		p := h.pages[k]
		if p == nil {
			p = &page{}
			h.pages[k] = p
		}
		for i := a - int(k.base); i < pageSize && a < int(addr)+int(qty); i, a = i+1, a+1 {
			f(p, i)
		}
	}
}

// lookup appends the answer to a read from the cache, if every value it
// asks for is young enough (or, stale, exists at all).
func (h *Handler) lookup(dst []byte, u, fc byte, addr, qty uint16, maxAge time.Duration, stale bool) ([]byte, bool) {
	now := h.now().UnixNano()
	for a := int(addr); a < int(addr)+int(qty); a++ {
		p := h.pages[pageKey{u, fc, uint16(a &^ (pageSize - 1))}]
		if p == nil {
			return dst, false
		}
		i := a & (pageSize - 1)
		at := p.at[i]
		if at == 0 || !stale && time.Duration(now-at) >= max(maxAge, p.keep[i]) {
			return dst, false
		}
	}
	return Answer(dst, fc, qty, func(i int) uint16 {
		a := int(addr) + i
		return h.pages[pageKey{u, fc, uint16(a &^ (pageSize - 1))}].val[a&(pageSize-1)]
	}), true
}

// store keeps the values of a device's normal answer to a read.
func (h *Handler) store(answer []byte, u, fc byte, addr, qty uint16, at int64) {
	vals, ok := Values(answer, fc, qty)
	if !ok {
		return
	}
	h.each(u, fc, addr, qty, func(p *page, i int) {
		p.val[i], p.at[i] = vals(), at
	})
}

// Answer appends the normal answer to a read of qty values of function
// fc (1 to 4), value(i) being the i-th: bits packed from the low bit with
// the last byte padded with zeros (FC 1, 2), or registers big-endian
// (FC 3, 4).
func Answer(dst []byte, fc byte, qty uint16, value func(i int) uint16) []byte {
	if fc >= pdu.ReadHoldingRegisters {
		dst = append(dst, fc, byte(2*qty))
		for i := range int(qty) {
			v := value(i)
			dst = append(dst, byte(v>>8), byte(v))
		}
		return dst
	}
	n := (int(qty) + 7) / 8
	dst = append(dst, fc, byte(n))
	for b := range n {
		var x byte
		for j := range 8 {
			if i := 8*b + j; i < int(qty) && value(i) != 0 {
				x |= 1 << j
			}
		}
		dst = append(dst, x)
	}
	return dst
}

// Values decodes the device's normal answer to a read of qty values of
// function fc: next returns them in order. ok is false if the answer is
// an exception or does not fit the read.
func Values(answer []byte, fc byte, qty uint16) (next func() uint16, ok bool) {
	if len(answer) < 2 || answer[0] != fc {
		return nil, false
	}
	data := answer[2:]
	if fc >= pdu.ReadHoldingRegisters {
		if int(answer[1]) != 2*int(qty) || len(data) != 2*int(qty) {
			return nil, false
		}
		i := 0
		return func() uint16 {
			v := uint16(data[i])<<8 | uint16(data[i+1])
			i += 2
			return v
		}, true
	}
	if n := (int(qty) + 7) / 8; int(answer[1]) != n || len(data) != n {
		return nil, false
	}
	i := 0
	return func() uint16 {
		v := uint16(data[i/8]>>(i%8)) & 1
		i++
		return v
	}, true
}
