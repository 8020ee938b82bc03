package cache

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/mcpgw/mcpgw/pkg/registers"
	"github.com/mcpgw/mcpgw/pkg/request"
)

// device stands for the line and a device whose values change on every
// read, so a value served from the cache shows which read it came from.
type device struct {
	m     *registers.Model
	reads int
	hook  func() // runs while a request is "on the line"
}

func (d *device) ServeModbus(_ context.Context, tr *request.Request, dst []byte) []byte {
	if d.hook != nil {
		d.hook()
	}
	tr.Line = "l1"
	out := d.m.Handle(tr.PDU, dst)
	if tr.PDU[0] <= 4 {
		d.reads++
		d.m.Lock()
		for i := range d.m.Holding {
			d.m.Holding[i] += 1
			d.m.Input[i] += 2
			d.m.Coils[i] = !d.m.Coils[i] || i%3 == 0
			d.m.Discrete[i] = !d.m.Discrete[i]
		}
		d.m.Unlock()
	}
	return out
}

type rig struct {
	t     *testing.T
	dev   *device
	h     *Handler
	clock time.Time
}

func newRig(t *testing.T, rule Rule) *rig {
	r := &rig{t: t, dev: &device{m: registers.New(1000)}, clock: time.Unix(1000, 0)}
	r.dev.m.Pattern(1)
	r.h = New()
	r.h.Middleware(r.dev)
	r.h.now = func() time.Time { return r.clock }
	rule.Line = "l1"
	r.h.SetRules(map[byte]Rule{1: rule})
	return r
}

// read asks for p and returns the answer, whether the line saw it, and
// the outcome.
func (r *rig) read(p ...byte) (answer []byte, line bool, outcome request.Outcome) {
	before := r.dev.reads
	tr := &request.Request{Unit: 1, PDU: p}
	answer = r.h.ServeModbus(context.Background(), tr, nil)
	return answer, r.dev.reads > before, tr.Outcome
}

func TestMaxAgeAndSubRanges(t *testing.T) {
	for _, fc := range []byte{1, 2, 3, 4} {
		r := newRig(t, Rule{MaxAge: 500 * time.Millisecond})
		first, line, _ := r.read(fc, 0, 10, 0, 20)
		if !line {
			t.Fatal("first read not sent to the line")
		}
		// Within max age: the same bytes, and a sub-range of them, from
		// the cache.
		r.clock = r.clock.Add(499 * time.Millisecond)
		again, line, outcome := r.read(fc, 0, 10, 0, 20)
		if line || outcome != request.Cached || !bytes.Equal(again, first) {
			t.Fatalf("FC %d within max age: line %v, %q, % X want % X", fc, line, outcome, again, first)
		}
		sub, line, _ := r.read(fc, 0, 13, 0, 9)
		if line {
			t.Fatalf("FC %d: a sub-range went to the line", fc)
		}
		// The device's own answer for the sub-range, from the values it
		// had at the first read: those of a fresh device.
		ref := registers.New(1000)
		ref.Pattern(1)
		if want := ref.Handle([]byte{fc, 0, 13, 0, 9}, nil); !bytes.Equal(sub, want) {
			t.Fatalf("FC %d sub-range: % X, the device said % X", fc, sub, want)
		}
		// A range reaching past what was read goes to the line.
		if _, line, _ := r.read(fc, 0, 25, 0, 10); !line {
			t.Fatalf("FC %d: a range partly uncached was answered from the cache", fc)
		}
		// Past max age: to the line.
		r.clock = r.clock.Add(time.Millisecond)
		if _, line, _ := r.read(fc, 0, 10, 0, 20); !line {
			t.Fatalf("FC %d: a value max_age old was served", fc)
		}
	}
}

func TestWritesClearWhatTheyTouch(t *testing.T) {
	r := newRig(t, Rule{MaxAge: time.Hour})
	r.read(3, 0, 0, 0, 100)
	r.read(4, 0, 0, 0, 100)
	r.h.ServeModbus(context.Background(), &request.Request{Unit: 1, PDU: []byte{16, 0, 40, 0, 2, 4, 0xAB, 0xCD, 0x12, 0x34}}, nil)
	// The written registers, and the same addresses in the input
	// registers (devices alias tables), are read from the line: the
	// client sees its write.
	got, line, _ := r.read(3, 0, 40, 0, 2)
	if !line || !bytes.Equal(got, []byte{3, 4, 0xAB, 0xCD, 0x12, 0x34}) {
		t.Fatalf("read back after a write: line %v, % X", line, got)
	}
	if _, line, _ := r.read(4, 0, 41, 0, 1); !line {
		t.Fatal("the aliased input register was served from before the write")
	}
	if _, line, _ := r.read(3, 0, 0, 0, 40); line {
		t.Fatal("registers the write did not touch were cleared")
	}
	// A code of unknown effect clears the unit.
	r.h.ServeModbus(context.Background(), &request.Request{Unit: 1, PDU: []byte{0x41, 1, 2}}, nil)
	if _, line, _ := r.read(3, 0, 0, 0, 1); !line {
		t.Fatal("a value survived a request of unknown effect")
	}
	// A read that overlaps a write in time fills nothing: its value may
	// be from before the write.
	r.dev.hook = func() {
		r.dev.hook = nil
		r.h.ServeModbus(context.Background(), &request.Request{Unit: 1, PDU: []byte{6, 0, 90, 0, 7}}, nil)
	}
	r.read(3, 0, 80, 0, 5) // the write runs while this read is on the line
	if _, line, _ := r.read(3, 0, 80, 0, 5); !line {
		t.Fatal("a read that overlapped a write filled the cache")
	}
}

func TestExceptionsAndOffline(t *testing.T) {
	r := newRig(t, Rule{MaxAge: time.Hour})
	for range 2 {
		if got, line, _ := r.read(3, 0x03, 0xE0, 0, 10); !line || got[0] != 0x83 {
			t.Fatalf("an exception was cached: line %v, % X", line, got)
		}
	}
	r.read(3, 0, 0, 0, 10)
	offline := true
	r.h.Offline = func(byte) bool { return offline }
	if _, line, outcome := r.read(3, 0, 0, 0, 10); !line || outcome == request.Cached {
		t.Fatal("an offline unit's read was answered from the cache")
	}
	// With cache_serve_stale: values of any age while offline, the line
	// for what is not cached; back online, max age again.
	r.h.SetRules(map[byte]Rule{1: {Line: "l1", MaxAge: time.Second, ServeStale: true}})
	r.read(3, 0, 0, 0, 10)
	r.clock = r.clock.Add(time.Hour)
	if _, line, outcome := r.read(3, 0, 0, 0, 10); line || outcome != request.Cached {
		t.Fatal("serve_stale: an offline unit's cached values were not served")
	}
	if _, line, _ := r.read(3, 0, 50, 0, 1); !line {
		t.Fatal("serve_stale: an uncached value was not asked of the line")
	}
	offline = false
	if _, line, _ := r.read(3, 0, 0, 0, 10); !line {
		t.Fatal("an hour-old value served to an online unit")
	}
}

func TestRefreshKeepsPolledRanges(t *testing.T) {
	r := newRig(t, Rule{}) // no max age: only polled ranges are served
	r.read(3, 0, 0, 0, 10)
	if _, line, _ := r.read(3, 0, 0, 0, 10); !line {
		t.Fatal("cached without a max age")
	}
	r.h.Refresh(context.Background(), &request.Request{Unit: 1, PDU: []byte{3, 0, 0, 0, 50}, Background: true}, nil, time.Second)
	r.clock = r.clock.Add(999 * time.Millisecond)
	if _, line, _ := r.read(3, 0, 20, 0, 30); line {
		t.Fatal("a polled range was not served within its keep")
	}
	r.clock = r.clock.Add(time.Millisecond)
	if _, line, _ := r.read(3, 0, 20, 0, 30); !line {
		t.Fatal("a polled range was served past its keep")
	}
	r.h.Unpoll()
	r.h.Refresh(context.Background(), &request.Request{Unit: 1, PDU: []byte{3, 0, 0, 0, 1}}, nil, time.Second)
	if _, line, _ := r.read(3, 0, 20, 0, 30); !line {
		t.Fatal("a range no longer polled kept its keep")
	}
}

// FuzzValues: decoding any answer and encoding it again gives the same
// bytes, for answers that fit the read.
func FuzzValues(f *testing.F) {
	f.Add([]byte{0x01, 0x03, 0xCD, 0x6B, 0x05}, byte(1), uint16(19)) // spec 6.1
	f.Add([]byte{0x03, 0x06, 0x02, 0x2B, 0x00, 0x00, 0x00, 0x64}, byte(3), uint16(3))
	f.Fuzz(func(t *testing.T, answer []byte, fc byte, qty uint16) {
		fc = 1 + fc%4
		next, ok := Values(answer, fc, qty)
		if !ok {
			return
		}
		vals := make([]uint16, qty)
		for i := range vals {
			vals[i] = next()
		}
		again := Answer(nil, fc, qty, func(i int) uint16 { return vals[i] })
		if fc >= 3 || qty%8 == 0 {
			if !bytes.Equal(again, answer) {
				t.Fatalf("% X decoded and encoded: % X", answer, again)
			}
			return
		}
		// Bits: the padding of the last byte is zeros again.
		last := answer[len(answer)-1] & (1<<(qty%8) - 1)
		if !bytes.Equal(again[:len(again)-1], answer[:len(answer)-1]) || again[len(again)-1] != last {
			t.Fatalf("% X decoded and encoded: % X", answer, again)
		}
	})
}
