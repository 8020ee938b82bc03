package history

import (
	"testing"
	"time"
	"unsafe"
)

var t0 = time.Unix(1_800_000_000, 0)

func at(sec int) time.Time { return t0.Add(time.Duration(sec) * time.Second) }

// TestSpans: transactions land in their second; spans sum them, older
// first; a failure counts by kind and not in the latencies.
func TestSpans(t *testing.T) {
	var l Line
	l.Add(at(0), OK, 3*time.Millisecond)
	l.Add(at(0), OK, 30*time.Millisecond)
	l.Add(at(1), Timeout, time.Second)
	l.Add(at(1), CRC, 0)
	l.Add(at(59), Gateway, 0)
	l.Add(at(60), OK, 150*time.Microsecond)
	sec := l.Spans(nil, at(60), 1, 61)
	if sec[0].Tx != 2 || sec[1].Tx != 2 || sec[1].Failed() != 2 || sec[1].Kinds[Timeout] != 1 || sec[1].Kinds[CRC] != 1 {
		t.Fatalf("seconds 0, 1: %+v %+v", sec[0], sec[1])
	}
	if sec[59].Kinds[Gateway] != 1 || sec[60].Tx != 1 || sec[30].Tx != 0 {
		t.Fatalf("seconds 30, 59, 60: %+v %+v %+v", sec[30], sec[59], sec[60])
	}
	min := l.Spans(nil, at(60), 60, 2)
	if min[0].Tx != 2 || min[1].Tx != 4 {
		t.Fatalf("minutes: %d, %d; want 2 (second 0) and 4 (seconds 1-60)", min[0].Tx, min[1].Tx)
	}
	if got := sec[0].Quantile(0.5); got != 5*time.Millisecond {
		t.Fatalf("p50 of 3 and 30 ms: %v, want the 5 ms bucket", got)
	}
	if got := sec[0].Quantile(0.99); got != 50*time.Millisecond {
		t.Fatalf("p99 of 3 and 30 ms: %v, want the 50 ms bucket", got)
	}
	if got := sec[1].Quantile(0.5); got != 0 {
		t.Fatalf("p50 with no answer: %v", got)
	}
}

// TestRingForgets: after an hour a bucket holds the new second, not the
// old; a second older than the ring reaches is dropped; a gap of more
// than an hour clears everything.
func TestRingForgets(t *testing.T) {
	var u Unit
	u.Add(at(0), OK, time.Millisecond)
	u.Add(at(Seconds), OK, time.Millisecond) // the same slot, an hour on
	if s := u.Spans(nil, at(Seconds), 1, Seconds+1); s[0].Tx != 0 || s[Seconds].Tx != 1 {
		t.Fatalf("an hour on: first %d, last %d", s[0].Tx, s[Seconds].Tx)
	}
	u.Add(at(0), OK, time.Millisecond) // as old as the ring reaches: gone
	if s := u.Spans(nil, at(Seconds), Seconds, 1); s[0].Tx != 1 {
		t.Fatalf("a second too old was kept: %d", s[0].Tx)
	}
	u.Add(at(5*Seconds), Timeout, 0)
	if s := u.Spans(nil, at(5*Seconds), Seconds, 1); s[0].Tx != 1 || s[0].Kinds[Timeout] != 1 {
		t.Fatalf("after a long gap: %+v", s[0])
	}
}

// TestUnitSaturates: a unit's narrow counters stop at their maximum
// rather than wrap.
func TestUnitSaturates(t *testing.T) {
	var u Unit
	for range 300 {
		u.Add(at(0), Timeout, 0)
		u.Add(at(0), OK, 40*time.Millisecond)
	}
	s := u.Spans(nil, at(0), 1, 1)[0]
	if s.Tx != 600 || s.Kinds[Timeout] != 255 || s.Lat[7] != 255 {
		t.Fatalf("%+v", s)
	}
}

// TestQuantileBeyond: latencies past the last bound read as twice it.
func TestQuantileBeyond(t *testing.T) {
	var l Line
	l.Add(at(0), OK, 3*time.Second)
	if got := l.Spans(nil, at(0), 1, 1)[0].Quantile(0.5); got != time.Second {
		t.Fatalf("p50 of 3 s: %v", got)
	}
}

func BenchmarkAdd(b *testing.B) {
	var l Line
	u := new(Unit)
	now := time.Now()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		t := now.Add(time.Duration(i) * time.Millisecond)
		l.Add(t, OK, 3*time.Millisecond)
		u.Add(t, OK, 3*time.Millisecond)
	}
}

// TestSizes: the rings take what the documentation says.
func TestSizes(t *testing.T) {
	if got := unsafe.Sizeof(Line{}); int(got) != LineBytes+8 {
		t.Errorf("a line's ring: %d bytes, documented %d", got, LineBytes)
	}
	if got := unsafe.Sizeof(Unit{}); int(got) != UnitBytes+8 {
		t.Errorf("a unit's ring: %d bytes, documented %d", got, UnitBytes)
	}
}
