// Package ratelimit caps how many requests a client address may send per
// second: a token bucket per address, its burst the same size as its rate
// per second. The gateway's own requesters that have no address (a
// Sparkplug node's writes, a slave line's master) each have a bucket of
// their own, by name (request.Request.Client), never a network client's. A request beyond it is answered at once with exception 06
// (server device busy), without touching a line, so one chatty client
// cannot take a line's time from the others.
package ratelimit

import (
	"context"
	"math"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mcpgw/mcpgw/pkg/pdu"
	"github.com/mcpgw/mcpgw/pkg/request"
)

// Handler hands Next the requests within each client address's rate.
type Handler struct {
	Next request.Handler

	rate    atomic.Uint64 // math.Float64bits of the tokens per second, and the bucket's size
	now     func() time.Time
	mu      sync.Mutex
	buckets map[who]*bucket
	limited atomic.Uint64
}

// who is whose bucket: a client address, or for a requester without
// one, its name.
type who struct {
	addr netip.Addr
	name string
}

type bucket struct {
	tokens float64
	last   time.Time
}

// New returns a Handler allowing rate requests per second per client
// address in front of next; rate <= 0 allows everything.
func New(rate float64, next request.Handler) *Handler {
	h := &Handler{Next: next, now: time.Now, buckets: make(map[who]*bucket)}
	h.SetRate(rate)
	return h
}

// SetRate changes the rate (a reload); buckets keep their tokens.
func (h *Handler) SetRate(rate float64) { h.rate.Store(math.Float64bits(rate)) }

// Limited returns how many requests were answered 06 for their rate.
func (h *Handler) Limited() uint64 { return h.limited.Load() }

// sweepAt is the number of addresses past which full buckets (addresses
// quiet for a second or more) are forgotten.
const sweepAt = 1024

// allow takes a token from a's bucket, if it has one; with no rate,
// every request may go.
func (h *Handler) allow(a who) bool {
	rate := math.Float64frombits(h.rate.Load())
	if rate <= 0 {
		return true
	}
	now := h.now()
	size := max(rate, 1)
	h.mu.Lock()
	defer h.mu.Unlock()
	b := h.buckets[a]
	if b == nil {
		if len(h.buckets) >= sweepAt {
			for k, v := range h.buckets {
				if v.tokens+now.Sub(v.last).Seconds()*rate >= size {
					delete(h.buckets, k)
				}
			}
		}
		b = &bucket{tokens: size, last: now}
		h.buckets[a] = b
	}
	b.tokens = min(size, b.tokens+now.Sub(b.last).Seconds()*rate)
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
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
	tr.Outcome = request.RateLimited
	if tr.Unit == pdu.Broadcast || len(tr.PDU) == 0 {
		return nil
	}
	return pdu.AppendException(dst, tr.PDU[0], pdu.ServerDeviceBusy)
}
