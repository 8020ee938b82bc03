package rtu

import (
	"testing"
	"time"
)

// TestQueueOrder: priority requests go first; a plain request that has
// waited past aging takes every other turn, never more.
func TestQueueOrder(t *testing.T) {
	q := newQueue(100, time.Second)
	now := time.Now()
	push := func(name string, prio bool, waited time.Duration) {
		q.push(&Request{Unit: name[0], Priority: prio, enqueued: now.Add(-waited)})
	}
	order := func() (s string) {
		for r := q.pop(now); r != nil; r = q.pop(now) {
			s += string(r.Unit)
		}
		return s
	}
	push("a", false, 0)
	push("W", true, 0)
	push("b", false, 0)
	push("X", true, 0)
	if got := order(); got != "WXab" {
		t.Fatalf("fresh reads and writes: %s, want WXab", got)
	}
	// Every read has waited past aging (an overloaded line): they
	// alternate with the writes, neither class starves.
	for _, n := range "abcd" {
		push(string(n), false, 2*time.Second)
	}
	push("W", true, 0)
	push("X", true, 0)
	push("Y", true, 0)
	// (The last one served before was a read: a write goes first.)
	if got := order(); got != "WaXbYcd" {
		t.Fatalf("aged reads and writes: %s, want WaXbYcd", got)
	}
	// Background requests (polls) go after every client's, however long
	// they waited.
	q.push(&Request{Unit: 'p', Background: true, enqueued: now.Add(-time.Hour)})
	push("a", false, 0)
	push("W", true, 0)
	q.push(&Request{Unit: 'q', Background: true, enqueued: now.Add(-time.Hour)})
	push("b", false, 2*time.Second)
	if got := order(); got != "Wabpq" {
		t.Fatalf("with background requests: %s, want Wabpq", got)
	}
	q = newQueue(2, time.Second)
	if q.push(&Request{}) != queued || q.push(&Request{Priority: true}) != queued || q.push(&Request{}) != full {
		t.Fatal("a queue of 2 took a third request")
	}
	// Closing hands back what waits, priority first, and refuses more.
	if rest := q.close(); len(rest) != 2 || !rest[0].Priority || rest[1].Priority {
		t.Fatalf("close returned %v", rest)
	}
	if q.push(&Request{}) != closed || q.len() != 0 {
		t.Fatal("a closed queue took a request")
	}
}

// TestQueueSkip: a request that must wait keeps its place while others go
// first, in their order.
func TestQueueSkip(t *testing.T) {
	q := newQueue(100, time.Second)
	now := time.Now()
	for _, n := range "abcde" {
		q.push(&Request{Unit: byte(n), enqueued: now})
	}
	q.push(&Request{Unit: 'W', Priority: true, enqueued: now})
	waits := func(r *Request) bool { return r.Unit == 'W' || r.Unit == 'b' }
	var got string
	for {
		r := q.pop(now)
		if r == nil {
			break
		}
		if waits(r) {
			if other := q.popFunc(func(r *Request) bool { return !waits(r) }); other != nil {
				q.unpop(r)
				r = other
			} else {
				waits = func(*Request) bool { return false } // its wait is over
			}
		}
		got += string(r.Unit)
	}
	if got != "acdeWb" {
		t.Fatalf("served %s, want acdeWb", got)
	}
}
