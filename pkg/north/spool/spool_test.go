package spool

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func open(t testing.TB, dir string, maxBytes int64) *Log {
	t.Helper()
	l, err := Open(dir, maxBytes)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func rec(i int) []byte { return []byte(fmt.Sprintf("record %06d", i)) }

// drain reads and acknowledges everything, checking each record is the
// next one expected from first on.
func drain(t *testing.T, l *Log, first, want int) {
	t.Helper()
	got := 0
	for {
		id, r, ok, err := l.Peek()
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			break
		}
		if !bytes.Equal(r, rec(first+got)) {
			t.Fatalf("record %d (id %d) = %q, want %q", got, id, r, rec(first+got))
		}
		if err := l.Ack(id); err != nil {
			t.Fatal(err)
		}
		got++
	}
	if got != want || l.Len() != 0 {
		t.Fatalf("read %d records, want %d (left %d)", got, want, l.Len())
	}
}

// TestOrderAcrossReopen: records come back in order, across segments and
// a reopen; what was acknowledged does not come back.
func TestOrderAcrossReopen(t *testing.T) {
	dir := t.TempDir()
	l := open(t, dir, 1<<20) // segments of 256 KiB
	for i := range 30000 {
		if err := l.Append(rec(i)); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(l.segs); n < 2 {
		t.Fatalf("%d segments, want several", n)
	}
	for range 1000 {
		id, _, _, _ := l.Peek()
		l.Ack(id)
	}
	// Sync as its timer does, then close; a Sync after Close (a timer
	// that fired late) does nothing.
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Sync(); err != nil {
		t.Fatalf("Sync after Close: %v", err)
	}
	l = open(t, dir, 1<<20)
	defer l.Close()
	if l.Dropped() != 0 || l.Truncated() != nil {
		t.Fatalf("dropped %d, truncated %v", l.Dropped(), l.Truncated())
	}
	// Ids go on from where they were: the node's barrier between what
	// was stored and what comes live depends on it.
	if next := l.Next(); next != 30000 {
		t.Fatalf("after a reopen the next id is %d, want 30000", next)
	}
	n := 0
	l.Each(func(id uint64, r []byte) bool {
		if id != uint64(1000+n) || !bytes.Equal(r, rec(1000+n)) {
			t.Fatalf("Each: record %d is %q", id, r)
		}
		n++
		return true
	})
	if n != 29000 {
		t.Fatalf("Each saw %d records, want 29000", n)
	}
	drain(t, l, 1000, 29000)
	if n := len(l.segs); n != 1 {
		t.Fatalf("%d segments left after everything was acknowledged, want 1", n)
	}
	l.Append(rec(30000))
	drain(t, l, 30000, 1)
}

// TestFullDropsOldest: past max the oldest segment goes, counted, and
// reading goes on from the next.
func TestFullDropsOldest(t *testing.T) {
	l := open(t, t.TempDir(), 64<<10)
	defer l.Close()
	for i := range 20000 {
		l.Append(rec(i))
	}
	if l.Size() > 64<<10+int64(l.segSize) {
		t.Fatalf("size %d past max %d", l.Size(), 64<<10)
	}
	dropped := int(l.Dropped())
	if dropped == 0 {
		t.Fatal("the log went past max, and nothing was counted dropped")
	}
	drain(t, l, dropped, 20000-dropped) // what is left begins where the count says
}

// TestTornTail: a record cut short or corrupted at the end (a power cut)
// is cut off on open; the records before it stay.
func TestTornTail(t *testing.T) {
	for _, tc := range []struct {
		name string
		tail []byte
	}{
		{"torn header", []byte{0, 0}},
		{"torn data", []byte{0, 0, 0, 13, 1, 2, 3, 4, 'r', 'e'}},
		{"bad checksum", append([]byte{0, 0, 0, 13, 1, 2, 3, 4}, rec(9)...)},
		{"absurd length", []byte{0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			l := open(t, dir, 1<<20)
			for i := range 5 {
				l.Append(rec(i))
			}
			name := l.segs[0].f.Name()
			l.Close()
			f, _ := os.OpenFile(name, os.O_APPEND|os.O_WRONLY, 0)
			f.Write(tc.tail)
			f.Close()
			l = open(t, dir, 1<<20)
			defer l.Close()
			if l.Truncated() == nil {
				t.Fatal("a bad tail, and Truncated says nothing")
			}
			l.Append(rec(5))
			drain(t, l, 0, 6)
		})
	}
}

// TestInUse: a second Open of a log in use fails, saying why.
func TestInUse(t *testing.T) {
	dir := t.TempDir()
	l := open(t, dir, 1<<20)
	if _, err := Open(dir, 1<<20); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("a second Open: %v", err)
	}
	l.Close()
	open(t, dir, 1<<20).Close()
}

// TestAckTorn: an ack file that does not check out means everything is
// sent again, never lost.
func TestAckTorn(t *testing.T) {
	dir := t.TempDir()
	l := open(t, dir, 1<<20)
	for i := range 10 {
		l.Append(rec(i))
	}
	for range 4 {
		id, _, _, _ := l.Peek()
		l.Ack(id)
	}
	l.Close()
	os.WriteFile(filepath.Join(dir, ackFile), []byte("garbage-garbage"), 0o600)
	l = open(t, dir, 1<<20)
	defer l.Close()
	drain(t, l, 0, 10)
}

// FuzzOpen: whatever a segment file holds, Open neither fails nor
// panics, and every record it then gives back checks out.
func FuzzOpen(f *testing.F) {
	f.Add([]byte{})
	f.Add(append([]byte{0, 0, 0, 13, 0x5e, 0x1b, 0x1c, 0x5a}, rec(0)...))
	f.Add([]byte{0, 0, 0, 1, 0, 0, 0, 0, 0, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, seg []byte) {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, strconv.Itoa(7)+segSuffix), seg, 0o600)
		l, err := Open(dir, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		for {
			id, r, ok, err := l.Peek()
			if err != nil {
				t.Fatal(err)
			}
			if !ok {
				break
			}
			if len(r) > MaxRecord {
				t.Fatalf("record %d of %d bytes", id, len(r))
			}
			l.Ack(id)
		}
		if err := l.Append([]byte("after")); err != nil {
			t.Fatal(err)
		}
		if _, r, ok, _ := l.Peek(); !ok || string(r) != "after" {
			t.Fatalf("after a fuzzed segment: %q %v", r, ok)
		}
	})
}

func BenchmarkAppend(b *testing.B) {
	l := open(b, b.TempDir(), 256<<20)
	defer l.Close()
	r := bytes.Repeat([]byte{1}, 100)
	b.ReportAllocs()
	b.SetBytes(int64(len(r)))
	for b.Loop() {
		if err := l.Append(r); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkPeekAck(b *testing.B) {
	l := open(b, b.TempDir(), 256<<20)
	defer l.Close()
	r := bytes.Repeat([]byte{1}, 100)
	for range b.N {
		l.Append(r)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		id, _, ok, err := l.Peek()
		if !ok || err != nil {
			b.Fatal(ok, err)
		}
		l.Ack(id)
	}
}
