package coalesce

import (
	"bytes"
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mcpgw/mcpgw/pkg/request"
)

// line stands for the line: each read it gets waits until the test lets
// it go, and answers with a value no other read gets.
type line struct {
	calls   atomic.Int32
	release chan struct{}
}

func (l *line) ServeModbus(_ context.Context, tr *request.Request, dst []byte) []byte {
	n := l.calls.Add(1)
	if tr.PDU[0] <= 4 {
		<-l.release
	}
	tr.Line, tr.Attempts = "l1", 1
	return append(dst, tr.PDU[0], 2, 0, byte(n))
}

// ask sends a request and returns the answer once it comes.
func ask(h *Handler, unit byte, p ...byte) (*request.Request, chan []byte) {
	tr := &request.Request{Unit: unit, PDU: p}
	out := make(chan []byte, 1)
	go func() { out <- h.ServeModbus(context.Background(), tr, nil) }()
	return tr, out
}

// waitCalls waits until the line has seen n requests.
func waitCalls(t *testing.T, l *line, n int32) {
	t.Helper()
	for end := time.Now().Add(5 * time.Second); l.calls.Load() < n; time.Sleep(time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("the line saw %d requests, want %d", l.calls.Load(), n)
		}
	}
}

// waitJoined waits until n requests wait for another's answer.
func waitJoined(t *testing.T, h *Handler, n int) {
	t.Helper()
	for end := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		h.mu.Lock()
		w := 0
		for _, g := range h.open {
			w += g.waiting
		}
		h.mu.Unlock()
		if w >= n {
			return
		}
		if time.Now().After(end) {
			t.Fatalf("%d requests joined, want %d", w, n)
		}
	}
}

func TestIdenticalReadsShareOneTransaction(t *testing.T) {
	l := &line{release: make(chan struct{})}
	h := New()
	h.Middleware(l)
	lead, first := ask(h, 1, 3, 0, 10, 0, 4)
	waitCalls(t, l, 1)
	var joiners []*request.Request
	var outs []chan []byte
	for range 5 {
		tr, out := ask(h, 1, 3, 0, 10, 0, 4)
		joiners, outs = append(joiners, tr), append(outs, out)
	}
	waitJoined(t, h, 5)
	// Not the same read: another unit, function, address or quantity.
	other := [][]byte{{3, 0, 10, 0, 5}, {4, 0, 10, 0, 4}, {3, 0, 11, 0, 4}}
	var otherOuts []chan []byte
	for _, p := range other {
		_, out := ask(h, 1, p...)
		otherOuts = append(otherOuts, out)
	}
	_, out := ask(h, 2, 3, 0, 10, 0, 4)
	otherOuts = append(otherOuts, out)
	waitCalls(t, l, 5)
	close(l.release)
	want := <-first
	if !bytes.Equal(want, []byte{3, 2, 0, 1}) || lead.Outcome != request.Pending {
		t.Fatalf("the first read: % X %q", want, lead.Outcome)
	}
	for i, out := range outs {
		if got := <-out; !bytes.Equal(got, want) || joiners[i].Outcome != request.Shared || joiners[i].Line != "l1" || joiners[i].Attempts != 1 {
			t.Fatalf("joiner %d: % X, %q on %q", i, got, joiners[i].Outcome, joiners[i].Line)
		}
	}
	for _, out := range otherOuts {
		if got := <-out; bytes.Equal(got, want) {
			t.Fatalf("a different read got the first one's answer % X", got)
		}
	}
	if l.calls.Load() != 5 || h.Joined() != 5 {
		t.Fatalf("%d line transactions, %d joined; want 5 and 5", l.calls.Load(), h.Joined())
	}
}

// TestWriteClosesOverlappingReads: a read that arrives after a write to
// its range (or a request of unknown effect) does not join a read from
// before the write; one outside the range does.
func TestWriteClosesOverlappingReads(t *testing.T) {
	for _, tc := range []struct {
		name  string
		write []byte
		joins bool
	}{
		{"FC 06 inside", []byte{6, 0, 12, 0, 1}, false},
		{"FC 16 overlapping the start", []byte{16, 0, 8, 0, 3, 6, 0, 0, 0, 0, 0, 0}, false},
		{"FC 05 to the same address in the coils", []byte{5, 0, 10, 0xFF, 0}, false},
		{"FC 08 (unknown effect)", []byte{8, 0, 1, 0, 0}, false},
		{"FC 06 after the range", []byte{6, 0, 14, 0, 1}, true},
		{"FC 16 before the range", []byte{16, 0, 0, 0, 10, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, true},
		{"FC 06 to another unit", nil, true},
		{"FC 43 (reads only)", []byte{0x2B, 0x0E, 1, 0}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := &line{release: make(chan struct{})}
			h := New()
			h.Middleware(l)
			_, first := ask(h, 1, 3, 0, 10, 0, 4)
			waitCalls(t, l, 1)
			unit, write := byte(1), tc.write
			if write == nil {
				unit, write = 2, []byte{6, 0, 12, 0, 1}
			}
			h.ServeModbus(context.Background(), &request.Request{Unit: unit, PDU: write}, nil)
			_, second := ask(h, 1, 3, 0, 10, 0, 4)
			if tc.joins {
				waitJoined(t, h, 1)
			} else {
				waitCalls(t, l, 3)
			}
			close(l.release)
			a, b := <-first, <-second
			if bytes.Equal(a, b) != tc.joins {
				t.Fatalf("joined %v (answers % X and % X), want %v", bytes.Equal(a, b), a, b, tc.joins)
			}
		})
	}
}

// TestNotShared: with sharing off, and for the gateway's own polls,
// every read goes to the line.
func TestNotShared(t *testing.T) {
	for _, off := range []bool{true, false} {
		l := &line{release: make(chan struct{})}
		h := New()
		h.Middleware(l)
		if off {
			h.SetOff([]byte{1})
		}
		var wg sync.WaitGroup
		for i := range 4 {
			wg.Go(func() {
				tr := &request.Request{Unit: 1, PDU: []byte{3, 0, 0, 0, 1}, Background: !off || i == 0}
				h.ServeModbus(context.Background(), tr, nil)
			})
		}
		waitCalls(t, l, 4)
		close(l.release)
		wg.Wait()
		if h.Joined() != 0 {
			t.Fatalf("off %v: %d joined", off, h.Joined())
		}
	}
}
