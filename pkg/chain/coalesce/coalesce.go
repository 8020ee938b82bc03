// Package coalesce lets identical reads share one transaction on the line:
// a read (FC 1, 2, 3, 4) that arrives while the same read (same unit,
// function, address and quantity) is queued or on the line waits for
// that one's answer instead of sending its own. Several masters polling
// the same blocks then cost the line one transaction per block, not one
// each. Writes are never shared, and a write (or any request that may
// change the device) closes the reads of its unit that it may affect to
// later arrivals: a read that arrives after it gets an answer from after
// it.
package coalesce

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/mcpgw/mcpgw/pkg/pdu"
	"github.com/mcpgw/mcpgw/pkg/request"
)

// Handler shares reads on their way to Next. Each request's answer is
// its own copy, under its own transaction id (the server's); a request
// that joined another reports Outcome request.Shared (or the other's failure),
// the line and the other's attempts.
type Handler struct {
	Next request.Handler

	mu     sync.Mutex
	open   map[key]*group // reads that later identical ones may join
	pool   sync.Pool      // groups no one joined, for reuse
	joined atomic.Uint64
	off    atomic.Pointer[[256]bool] // units whose reads are not shared
}

type key struct {
	unit byte
	pdu  [5]byte
}

// group is one read on its way to the line and the requests waiting for
// its answer.
type group struct {
	waiting int           // requests that joined; guarded by Handler.mu
	done    chan struct{} // made by the first to join, closed when the fields below are set
	answer  []byte
	outcome request.Outcome
	line    string
	tries   int
}

// New returns a handler that shares reads on their way on, for
// every unit.
func New() *Handler {
	h := &Handler{open: make(map[key]*group)}
	h.off.Store(&[256]bool{})
	return h
}

// Middleware puts h in front of next, in the chain.
func (h *Handler) Middleware(next request.Handler) request.Handler {
	h.Next = next
	return h
}

// SetOff turns sharing off for units (shared_reads = false) and on for
// every other; safe while serving (a reload).
func (h *Handler) SetOff(units []byte) {
	off := new([256]bool)
	for _, u := range units {
		off[u] = true
	}
	h.off.Store(off)
}

// Joined returns how many requests were answered by another's
// transaction.
func (h *Handler) Joined() uint64 { return h.joined.Load() }

// ServeModbus implements request.Handler.
func (h *Handler) ServeModbus(ctx context.Context, tr *request.Request, dst []byte) []byte {
	if _, _, _, read := pdu.ParseRead(tr.PDU); !read || tr.Background || tr.Unit == pdu.Broadcast || h.off.Load()[tr.Unit] {
		if !read {
			h.close(tr.PDU, tr.Unit)
		}
		return h.Next.ServeModbus(ctx, tr, dst)
	}
	k := key{unit: tr.Unit}
	copy(k.pdu[:], tr.PDU)
	h.mu.Lock()
	if g := h.open[k]; g != nil {
		if g.waiting++; g.done == nil {
			g.done = make(chan struct{})
		}
		h.mu.Unlock()
		<-g.done // bounded: the line ends every transaction by its timeouts
		h.joined.Add(1)
		tr.Line, tr.Attempts, tr.Outcome = g.line, g.tries, g.outcome
		if tr.Outcome == request.Pending || tr.Outcome.ByDevice() {
			tr.Outcome = request.Shared
		}
		return append(dst, g.answer...)
	}
	g, _ := h.pool.Get().(*group)
	if g == nil {
		g = &group{}
	}
	h.open[k] = g
	h.mu.Unlock()

	out := h.Next.ServeModbus(ctx, tr, dst)

	h.mu.Lock()
	if h.open[k] == g {
		delete(h.open, k)
	}
	waiting := g.waiting // no one joins once g is out of open
	h.mu.Unlock()
	if waiting == 0 { // the common case: nothing to hand on, and g is free again
		h.pool.Put(g)
		return out
	}
	g.answer = append([]byte(nil), out[len(dst):]...)
	g.outcome, g.line, g.tries = tr.Outcome, tr.Line, tr.Attempts
	close(g.done)
	return out
}

// close takes the open reads of unit that request p may change out of
// reach of later arrivals: all of them if its effect is unknown.
func (h *Handler) close(p []byte, unit byte) {
	addr, qty, all := pdu.Written(p)
	if qty == 0 && !all {
		return
	}
	lo, hi := int(addr), int(addr)+int(qty)
	h.mu.Lock()
	defer h.mu.Unlock()
	for k := range h.open {
		if k.unit != unit && unit != pdu.Broadcast {
			continue
		}
		_, a, n, _ := pdu.ParseRead(k.pdu[:])
		if all || int(a) < hi && lo < int(a)+int(n) {
			delete(h.open, k)
		}
	}
}
