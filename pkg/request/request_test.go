package request

import (
	"context"
	"strings"
	"testing"

	"github.com/mcpgw/mcpgw/pkg/pdu"
)

// TestChain: middlewares run in the order listed, the first outermost,
// and one that answers does not pass the request on.
func TestChain(t *testing.T) {
	var order []string
	mw := func(name string, answer bool) Middleware {
		return func(next Handler) Handler {
			return HandlerFunc(func(ctx context.Context, r *Request, dst []byte) []byte {
				order = append(order, name)
				if answer {
					r.Outcome = Denied
					return append(dst, r.PDU[0]|0x80, 1)
				}
				return next.ServeModbus(ctx, r, dst)
			})
		}
	}
	last := HandlerFunc(func(_ context.Context, r *Request, dst []byte) []byte {
		order = append(order, "last")
		return append(dst, r.PDU...)
	})
	h := Chain(last, mw("a", false), mw("b", false))
	if out := h.ServeModbus(context.Background(), &Request{PDU: []byte{3, 0}}, nil); string(out) != "\x03\x00" || strings.Join(order, ",") != "a,b,last" {
		t.Fatalf("% X through %v", out, order)
	}
	order = nil
	r := &Request{PDU: []byte{6}}
	if out := Chain(last, mw("a", true), mw("b", false)).ServeModbus(context.Background(), r, nil); string(out) != "\x86\x01" || strings.Join(order, ",") != "a" {
		t.Fatalf("% X through %v", out, order)
	}
	if o, exc := r.Result([]byte{0x86, 1}); o != Denied || exc != 1 {
		t.Fatalf("Result: %v %d", o, exc)
	}
	r.Reset()
	if o, _ := r.Result([]byte{0x86, 2}); o != Exception {
		t.Fatalf("a device's exception: %v", o)
	}
	if o, _ := r.Result([]byte{3, 2, 0, 1}); o != OK {
		t.Fatalf("an answer: %v", o)
	}
}

// TestOutcomeNames: every outcome has a name of its own, and only the
// device's answers are the device's.
func TestOutcomeNames(t *testing.T) {
	seen := map[string]bool{}
	for o := OK; o < numOutcomes; o++ {
		name := o.String()
		if name == "" || name == "pending" || seen[name] {
			t.Errorf("outcome %d: name %q", o, name)
		}
		seen[name] = true
		want := o == OK || o == Exception || o == Shared || o == Cached
		if o.ByDevice() != want {
			t.Errorf("%s: ByDevice %v", name, o.ByDevice())
		}
	}
	if len(Outcomes()) != len(seen) {
		t.Fatalf("Outcomes() has %d names, want %d", len(Outcomes()), len(seen))
	}
}

// TestObserve: the observer sees how each transaction ended, judged on
// the answer alone when the handler appends to a buffer that already
// holds something (the TCP server's header).
func TestObserve(t *testing.T) {
	var got []Done
	h := Observe(HandlerFunc(func(_ context.Context, r *Request, dst []byte) []byte {
		switch r.PDU[0] {
		case 3:
			return append(dst, 3, 2, 0, 1)
		case 6:
			return append(dst, 0x86, 2) // the device's exception
		}
		return r.Refuse(dst, NoRoute, pdu.GatewayPathUnavailable)
	}), func(_ context.Context, _ *Request, d Done) { got = append(got, d) })
	header := []byte{0x83, 0x0B} // would read as an exception if it were taken for the answer
	for _, fc := range []byte{3, 6, 16} {
		out := h.ServeModbus(context.Background(), &Request{Unit: 1, PDU: []byte{fc}}, header[:2:2])
		if len(out) < 2 || out[0] != 0x83 {
			t.Fatalf("FC %d: the buffer's head was lost: % X", fc, out)
		}
	}
	want := []struct {
		o   Outcome
		exc byte
	}{{OK, 0}, {Exception, 2}, {NoRoute, byte(pdu.GatewayPathUnavailable)}}
	if len(got) != len(want) {
		t.Fatalf("%d observations, want %d", len(got), len(want))
	}
	for i, w := range want {
		if got[i].Outcome != w.o || got[i].Exception != w.exc || got[i].Start.IsZero() || got[i].Duration < 0 {
			t.Errorf("observation %d: %+v, want outcome %v exception %d", i, got[i], w.o, w.exc)
		}
	}
}

// TestRefuse: a gateway exception under the request's own function
// code, recorded as the outcome given; a broadcast gets no answer.
func TestRefuse(t *testing.T) {
	r := &Request{Unit: 7, PDU: []byte{pdu.ReadHoldingRegisters, 0, 0, 0, 1}}
	if out := r.Refuse([]byte{0xAA}, Offline, pdu.GatewayTargetNoResponse); string(out) != "\xAA\x83\x0B" || r.Outcome != Offline {
		t.Fatalf("% X, %v", out, r.Outcome)
	}
	b := &Request{Unit: pdu.Broadcast, PDU: []byte{pdu.WriteSingleRegister, 0, 1, 0, 2}}
	if out := b.Refuse(nil, Denied, pdu.IllegalFunction); out != nil || b.Outcome != Denied {
		t.Fatalf("broadcast: % X, %v", out, b.Outcome)
	}
	if out := (&Request{Unit: 1}).Refuse(nil, Denied, pdu.IllegalFunction); out != nil {
		t.Fatalf("empty PDU: % X", out)
	}
}
