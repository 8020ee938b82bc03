package ratelimit

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/mcpgw/mcpgw/pkg/request"
)

// TestBucket: a burst of rate requests goes through, the next is answered
// 06; the bucket refills at rate per second; each address has its own.
func TestBucket(t *testing.T) {
	reached := 0
	next := request.HandlerFunc(func(_ context.Context, r *request.Request, dst []byte) []byte {
		reached++
		return append(dst, r.PDU...)
	})
	h := New(5)
	h.Middleware(next)
	now := time.Unix(1000, 0)
	h.now = func() time.Time { return now }
	a := netip.MustParseAddrPort("10.0.0.1:4000")
	b := netip.MustParseAddrPort("10.0.0.2:4000")
	serve := func(from netip.AddrPort) ([]byte, request.Outcome) {
		r := &request.Request{Unit: 1, PDU: []byte{3, 0, 0, 0, 1}, Addr: from}
		out := h.ServeModbus(context.Background(), r, nil)
		return out, r.Outcome
	}
	for i := range 5 {
		if out, _ := serve(a); out[0] != 3 {
			t.Fatalf("request %d of the burst: % X", i, out)
		}
	}
	if out, outcome := serve(a); string(out) != "\x83\x06" || outcome != request.RateLimited {
		t.Fatalf("beyond the burst: % X %q", out, outcome)
	}
	if out, _ := serve(b); out[0] != 3 {
		t.Fatalf("another address: % X", out)
	}
	now = now.Add(200 * time.Millisecond) // one token back
	if out, _ := serve(a); out[0] != 3 {
		t.Fatalf("after 200 ms: % X", out)
	}
	if out, _ := serve(a); out[0] != 0x83 {
		t.Fatalf("the token was spent: % X", out)
	}
	if reached != 7 || h.Limited() != 2 {
		t.Fatalf("reached %d, limited %d", reached, h.Limited())
	}
	// Forgetting quiet addresses keeps the table bounded.
	now = now.Add(time.Hour)
	for i := range 3 * sweepAt {
		serve(netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}), 1))
		now = now.Add(10 * time.Millisecond)
	}
	if n := len(h.limiters); n > 2*sweepAt {
		t.Fatalf("%d buckets kept", n)
	}
}

// TestOwnRequesters: the gateway's own requesters without an address (a
// Sparkplug node's writes, a slave line's master) each have a bucket of
// their own, never a local client's.
func TestOwnRequesters(t *testing.T) {
	next := request.HandlerFunc(func(_ context.Context, r *request.Request, dst []byte) []byte { return append(dst, r.PDU...) })
	h := New(1)
	h.Middleware(next)
	now := time.Unix(1000, 0)
	h.now = func() time.Time { return now }
	serve := func(r *request.Request) []byte {
		r.Unit, r.PDU = 1, []byte{6, 0, 1, 0, 3}
		return h.ServeModbus(context.Background(), r, nil)
	}
	local := netip.MustParseAddrPort("127.0.0.1:4000")
	if out := serve(&request.Request{Addr: local}); out[0] != 6 {
		t.Fatalf("local client: % X", out)
	}
	if out := serve(&request.Request{Addr: local}); out[0] != 0x86 {
		t.Fatalf("local client, past its rate: % X", out)
	}
	for _, who := range []string{"sparkplug", "slave_line hmi"} {
		if out := serve(&request.Request{Client: who}); out[0] != 6 {
			t.Fatalf("%s, with 127.0.0.1's bucket empty: % X", who, out)
		}
		if out := serve(&request.Request{Client: who}); out[0] != 0x86 {
			t.Fatalf("%s has no limit of its own: % X", who, out)
		}
	}
}
