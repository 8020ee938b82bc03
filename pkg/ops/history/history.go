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

// A Line's second: wide counters (a line may carry thousands a second).
type lineSecond struct {
	tx    uint32
	fails [numKinds - 1]uint32 // by kind, Timeout first
	lat   [NumBuckets]uint32
}

// A unit's second: narrow counters, which saturate; 247 units a line.
type unitSecond struct {
	tx    uint16
	fails [numKinds - 1]uint8
	lat   [NumBuckets]uint8
}

// ring is the bookkeeping of a ring of seconds: head is the unix second
// of the newest bucket; the bucket of second t is t mod Seconds.
type ring struct{ head int64 }

// advance moves the ring to second t, clearing the buckets of the
// seconds skipped; it reports false for a second older than the ring
// reaches (too old to keep).
func (r *ring) advance(t int64, clear func(i int)) bool {
	switch {
	case r.head == 0:
		r.head = t
		clear(int(t % Seconds))
	case t > r.head:
		for s := r.head + 1; s <= t && s <= r.head+Seconds; s++ {
			clear(int(s % Seconds))
		}
		r.head = t
	case t <= r.head-Seconds:
		return false
	}
	return true
}

// Line is a line's last hour.
type Line struct {
	ring
	s [Seconds]lineSecond
}

// Add records a transaction that ended at t as kind, with latency d
// (counted in the histogram for the device's answers only).
func (l *Line) Add(t time.Time, k Kind, d time.Duration) {
	sec := t.Unix()
	if !l.advance(sec, func(i int) { l.s[i] = lineSecond{} }) {
		return
	}
	b := &l.s[sec%Seconds]
	record(&b.tx, b.fails[:], b.lat[:], k, d)
}

// Unit is a unit's last hour.
type Unit struct {
	ring
	s [Seconds]unitSecond
}

// Add records a transaction that ended at t as kind, with latency d.
func (u *Unit) Add(t time.Time, k Kind, d time.Duration) {
	sec := t.Unix()
	if !u.advance(sec, func(i int) { u.s[i] = unitSecond{} }) {
		return
	}
	b := &u.s[sec%Seconds]
	record(&b.tx, b.fails[:], b.lat[:], k, d)
}

// counter is a bucket's counter: as wide as the ring can afford.
type counter interface{ ~uint8 | ~uint16 | ~uint32 }

// inc counts one more in v, which stays at its largest value once there.
func inc[C counter](v *C) {
	if *v+1 != 0 {
		*v++
	}
}

// record counts a transaction of kind k with latency d in a second's
// counters: tx, fails by kind (Timeout first) and the histogram lat.
func record[T, C counter](tx *T, fails, lat []C, k Kind, d time.Duration) {
	inc(tx)
	if k != OK {
		inc(&fails[k-1])
		return
	}
	inc(&lat[bucketOf(d)])
}

// sum adds a second's counters to s.
func sum[T, C counter](s *Span, tx T, fails, lat []C) {
	if tx == 0 {
		return // an idle second: nothing in it
	}
	s.Tx += uint64(tx)
	for k, v := range fails {
		s.Kinds[k+1] += uint64(v)
	}
	for i, v := range lat {
		s.Lat[i] += uint64(v)
	}
}

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

// Spans sums the ring's seconds into n spans of step seconds each, the
// last ending with second now (older first), in dst (grown if need be).
// Seconds the ring never saw, or has cleared, count as nothing.
func (l *Line) Spans(dst []Span, now time.Time, step, n int) []Span {
	return spans(dst, &l.ring, now, step, n, func(s *Span, i int) { b := &l.s[i]; sum(s, b.tx, b.fails[:], b.lat[:]) })
}

// Spans is Line.Spans for a unit.
func (u *Unit) Spans(dst []Span, now time.Time, step, n int) []Span {
	return spans(dst, &u.ring, now, step, n, func(s *Span, i int) { b := &u.s[i]; sum(s, b.tx, b.fails[:], b.lat[:]) })
}

func spans(dst []Span, r *ring, now time.Time, step, n int, add func(*Span, int)) []Span {
	out := slices.Grow(dst[:0], n)[:n]
	clear(out)
	end := now.Unix()
	for j := range n {
		for k := range step {
			sec := end - int64((n-1-j)*step+k)
			if r.head == 0 || sec > r.head || sec <= r.head-Seconds {
				continue
			}
			add(&out[j], int(sec%Seconds))
		}
	}
	return out
}

// Sizes of the rings, for the documentation and its test.
const (
	LineBytes = Seconds * (4 + 4*(int(numKinds)-1) + 4*NumBuckets) // 3600 × 68
	UnitBytes = Seconds * (2 + (int(numKinds) - 1) + NumBuckets)   // 3600 × 18
)
