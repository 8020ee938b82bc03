package request

import (
	"context"
	"strings"
	"testing"
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
