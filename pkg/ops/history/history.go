// Package history keeps the last hour of a line's or a unit's
// transactions in one-second buckets: how many, how many failed and how
// (no answer, a bad CRC, an unexpected answer, the gateway's own
// exception), and their latencies in a coarse histogram, from which the
// p50 and p99 of any span are read. A ring of Seconds buckets of fixed
// size per line and per unit: memory does not grow with traffic, and
// recording allocates nothing.
package history

import (
	"math"
	"slices"
	"time"
)

// Seconds is how far back a ring reaches.
const Seconds = 3600

// Kind is how a transaction ended, for the history.
type Kind uint8

const (
	OK         Kind = iota // answered by the device (its exception included)
	Timeout                // no answer
	CRC                    // answers with a bad CRC, and no good one
	Unexpected             // answers from another unit or function, or that did not fit
	Gateway                // the gateway's own exception: offline, no route, line down, queue full, expired
	numKinds
)

// KindNames name the kinds in the JSON series.
var KindNames = [numKinds]string{"ok", "timeout", "crc", "unexpected", "gateway"}

// Bounds are the latency histogram's upper bounds; a latency beyond the
// last falls in one more bucket. The p50 and p99 read from it are the
// bound of the bucket they fall in: as fine as a 1-2-5 series.
var Bounds = [...]time.Duration{
	200 * time.Microsecond, 500 * time.Microsecond, time.Millisecond, 2 * time.Millisecond, 5 * time.Millisecond,
	10 * time.Millisecond, 20 * time.Millisecond, 50 * time.Millisecond, 100 * time.Millisecond,
	200 * time.Millisecond, 500 * time.Millisecond,
}

// NumBuckets is the histogram's size: one per bound and one beyond.
const NumBuckets = len(Bounds) + 1

// bucketOf is the histogram bucket of latency d.
func bucketOf(d time.Duration) int {
	for i, b := range Bounds {
		if d <= b {
			return i
		}
	}
	return len(Bounds)
}

// counter is a second's counter: as wide as its ring can afford.
type counter interface{ ~uint8 | ~uint16 | ~uint32 }

// inc counts one more in v, which stays at its largest value once there.
func inc[C counter](v *C) {
	if *v+1 != 0 {
		*v++
	}
}

// second is a second's counters: transactions, failures by kind
// (Timeout first) and the latency histogram of the device's answers.
type second[T, C counter] struct {
	tx    T
	fails [numKinds - 1]C
	lat   [NumBuckets]C
}

func (b *second[T, C]) addTo(s *Span) {
	if b.tx == 0 {
		return // an idle second: nothing in it
	}
	s.Tx += uint64(b.tx)
	for k, v := range b.fails {
		s.Kinds[k+1] += uint64(v)
	}
	for i, v := range b.lat {
		s.Lat[i] += uint64(v)
	}
}

// hour is a ring of the last Seconds seconds: head is the unix second
// of the newest; second t is in s[t mod Seconds].
type hour[T, C counter] struct {
	head int64
	s    [Seconds]second[T, C]
}

// Add records a transaction that ended at t as kind, with latency d
// (counted in the histogram for the device's answers only). The seconds
// the ring moves past are cleared; a second older than it reaches is
// not kept.
func (h *hour[T, C]) Add(t time.Time, k Kind, d time.Duration) {
	sec := t.Unix()
	switch {
	case h.head == 0:
		h.head = sec
		h.s[sec%Seconds] = second[T, C]{}
	case sec > h.head:
		for x := h.head + 1; x <= sec && x <= h.head+Seconds; x++ {
			h.s[x%Seconds] = second[T, C]{}
		}
		h.head = sec
	case sec <= h.head-Seconds:
		return
	}
	b := &h.s[sec%Seconds]
	inc(&b.tx)
	if k != OK {
		inc(&b.fails[k-1])
		return
	}
	inc(&b.lat[bucketOf(d)])
}

// Spans sums the ring's seconds into n spans of step seconds each, the
// last ending with second now (older first), in dst (grown if need be).
// Seconds the ring never saw, or has cleared, count as nothing.
func (h *hour[T, C]) Spans(dst []Span, now time.Time, step, n int) []Span {
	out := slices.Grow(dst[:0], n)[:n]
	clear(out)
	end := now.Unix()
	for j := range n {
		for k := range step {
			sec := end - int64((n-1-j)*step+k)
			if h.head == 0 || sec > h.head || sec <= h.head-Seconds {
				continue
			}
			h.s[sec%Seconds].addTo(&out[j])
		}
	}
	return out
}

// Line is a line's last hour (Add, Spans), in wide counters: a line may
// carry thousands of transactions a second.
type Line struct{ hour[uint32, uint32] }

// Unit is a unit's last hour (Add, Spans), in narrow counters that
// saturate: a line has up to 247 units.
type Unit struct{ hour[uint16, uint8] }

// Span is a stretch of buckets summed: transactions, failures by kind
// (Kinds[OK] is not counted), and the latency histogram.
type Span struct {
	Tx    uint64
	Kinds [numKinds]uint64
	Lat   [NumBuckets]uint64
}

// Failed is the span's failed transactions.
func (s *Span) Failed() uint64 {
	var n uint64
	for k := Timeout; k < numKinds; k++ {
		n += s.Kinds[k]
	}
	return n
}

// Quantile is the latency under which fraction q of the span's answered
// transactions fall, as the bound of its bucket (beyond the last bound:
// twice it); 0 with none.
func (s *Span) Quantile(q float64) time.Duration {
	var n uint64
	for _, c := range s.Lat {
		n += c
	}
	if n == 0 {
		return 0
	}
	want := uint64(math.Ceil(q * float64(n)))
	var acc uint64
	for i, c := range s.Lat {
		if acc += c; acc >= want {
			if i < len(Bounds) {
				return Bounds[i]
			}
			break
		}
	}
	return 2 * Bounds[len(Bounds)-1]
}

// Add sums o into s.
func (s *Span) Add(o *Span) {
	s.Tx += o.Tx
	for k := range s.Kinds {
		s.Kinds[k] += o.Kinds[k]
	}
	for i := range s.Lat {
		s.Lat[i] += o.Lat[i]
	}
}

// Sizes of the rings, for the documentation and its test.
const (
	LineBytes = Seconds * (4 + 4*(int(numKinds)-1) + 4*NumBuckets) // 3600 × 68
	UnitBytes = Seconds * (2 + (int(numKinds) - 1) + NumBuckets)   // 3600 × 18
)
