// Package ratelimit caps how many requests a client address may send per
// second: a token bucket per address (golang.org/x/time/rate), its burst
// the rate per second (at least one). The gateway's own requesters that
// have no address (a Sparkplug node's writes, a slave line's master)
// each have a bucket of their own, by name (request.Request.Client), never
// a network client's. A request beyond it is answered at once with
// exception 06 (server device busy), without touching a line, so one
// chatty client cannot take a line's time from the others.
package ratelimit

import (
	"context"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/mcpgw/mcpgw/pkg/pdu"
	"github.com/mcpgw/mcpgw/pkg/request"
)

// Handler hands Next the requests within each client address's rate.
type Handler struct {
	Next request.Handler

	on       atomic.Bool // a rate is set: without one, no lock is taken
	now      func() time.Time
	mu       sync.Mutex
	limit    rate.Limit
	burst    int
	limiters map[who]*rate.Limiter
	limited  atomic.Uint64
}

// who is whose bucket: a client address, or for a requester without
// one, its name.
type who struct {
	addr netip.Addr
	name string
}

// New returns a Handler allowing perSecond requests per second per
// client address; perSecond <= 0 allows everything.
func New(perSecond float64) *Handler {
	h := &Handler{now: time.Now, limiters: make(map[who]*rate.Limiter)}
	h.SetRate(perSecond)
	return h
}

// Middleware puts h in front of next, in the chain.
func (h *Handler) Middleware(next request.Handler) request.Handler {
	h.Next = next
	return h
}

// SetRate changes the rate (a reload); buckets keep their tokens.
func (h *Handler) SetRate(perSecond float64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.limit, h.burst = rate.Limit(perSecond), max(1, int(perSecond))
	now := h.now()
	for _, l := range h.limiters {
		l.SetLimitAt(now, h.limit)
		l.SetBurstAt(now, h.burst)
	}
	h.on.Store(perSecond > 0)
}

// Limited returns how many requests were answered 06 for their rate.
func (h *Handler) Limited() uint64 { return h.limited.Load() }

// sweepAt is the number of addresses past which full buckets (addresses
// quiet long enough to have their burst back) are forgotten.
const sweepAt = 1024

// allow takes a token from a's bucket, if it has one; with no rate,
// every request may go.
func (h *Handler) allow(a who) bool {
	if !h.on.Load() {
		return true
	}
	now := h.now()
	h.mu.Lock()
	defer h.mu.Unlock()
	l := h.limiters[a]
	if l == nil {
		if len(h.limiters) >= sweepAt {
			for k, v := range h.limiters {
				if v.TokensAt(now) >= float64(h.burst) {
					delete(h.limiters, k)
				}
			}
		}
		l = rate.NewLimiter(h.limit, h.burst)
		h.limiters[a] = l
	}
	return l.AllowN(now, 1)
}

// ServeModbus implements request.Handler.
func (h *Handler) ServeModbus(ctx context.Context, tr *request.Request, dst []byte) []byte {
	a := who{addr: tr.Addr.Addr()}
	if !a.addr.IsValid() {
		a.name = tr.Client
	}
	if h.allow(a) {
		return h.Next.ServeModbus(ctx, tr, dst)
	}
	h.limited.Add(1)
	return tr.Refuse(dst, request.RateLimited, pdu.ServerDeviceBusy)
}
