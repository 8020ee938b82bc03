package rtu

import (
	"sync"
	"time"
)

// queue holds the transactions waiting for a line, in three classes:
// priority ones (writes, operators' clients) go before plain ones, and
// background ones (the gateway's own polls) after both. Within
// a class it is first in, first out, and since a connection has at most
// one request waiting, that is round-robin across clients. A plain
// request that has waited longer than aging takes every other turn from
// the priority ones, so reads are never starved by a stream of writes,
// and writes still wait at most one read when every read in the queue
// has waited that long (a line that is simply overloaded).
type queue struct {
	mu        sync.Mutex
	high, low fifo
	bg        fifo          // background: served only when no client's request waits
	size      int           // requests waiting at most
	aging     time.Duration // a plain request that waited this long takes every other turn
	lastLow   bool          // the last one served was plain
	closed    bool          // the line retired: push adds nothing
	wake      chan struct{} // senders: push; receiver: the line's goroutine
}

// pushed is what push did with a request.
type pushed int

const (
	queued pushed = iota
	full          // the queue holds size requests
	closed        // the line retired (see close)
)

// fifo is a slice used as a queue; its storage is reused once it empties.
type fifo struct {
	items []*Request
	head  int
}

func (f *fifo) len() int        { return len(f.items) - f.head }
func (f *fifo) push(r *Request) { f.items = append(f.items, r) }
func (f *fifo) peek() *Request  { return f.items[f.head] }
func (f *fifo) pop() (r *Request) {
	r, f.items[f.head] = f.items[f.head], nil
	if f.head++; f.head == len(f.items) {
		f.items, f.head = f.items[:0], 0
	}
	return r
}

// pushFront puts r back at the head.
func (f *fifo) pushFront(r *Request) {
	if f.head > 0 {
		f.head--
		f.items[f.head] = r
		return
	}
	f.items = append(f.items, nil)
	copy(f.items[1:], f.items)
	f.items[0] = r
}

// has reports whether ok is true for a request in f.
func (f *fifo) has(ok func(*Request) bool) bool {
	for _, r := range f.items[f.head:] {
		if ok(r) {
			return true
		}
	}
	return false
}

// popFunc removes and returns the first request for which ok is true.
func (f *fifo) popFunc(ok func(*Request) bool) *Request {
	for i := f.head; i < len(f.items); i++ {
		if r := f.items[i]; ok(r) {
			copy(f.items[i:], f.items[i+1:])
			f.items[len(f.items)-1] = nil
			f.items = f.items[:len(f.items)-1]
			if f.head == len(f.items) {
				f.items, f.head = f.items[:0], 0
			}
			return r
		}
	}
	return nil
}

func newQueue(size int, aging time.Duration) *queue {
	return &queue{size: size, aging: aging, wake: make(chan struct{}, 1)}
}

// push adds r to its class, unless the queue is full or closed.
func (q *queue) push(r *Request) pushed {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return closed
	}
	if q.high.len()+q.low.len()+q.bg.len() >= q.size {
		q.mu.Unlock()
		return full
	}
	q.class(r).push(r)
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
	return queued
}

// close makes every later push report closed, and returns what waits,
// priority requests first, each class in order.
func (q *queue) close() []*Request {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.closed = true
	var rest []*Request
	for q.high.len() > 0 {
		rest = append(rest, q.high.pop())
	}
	for q.low.len() > 0 {
		rest = append(rest, q.low.pop())
	}
	for q.bg.len() > 0 {
		rest = append(rest, q.bg.pop())
	}
	return rest
}

// class is the fifo r waits in.
func (q *queue) class(r *Request) *fifo {
	switch {
	case r.Priority:
		return &q.high
	case r.Background:
		return &q.bg
	}
	return &q.low
}

// pop returns the next request to serve, or nil when none waits.
func (q *queue) pop(now time.Time) *Request {
	q.mu.Lock()
	defer q.mu.Unlock()
	switch {
	case q.low.len() > 0 && (q.high.len() == 0 || !q.lastLow && now.Sub(q.low.peek().enqueued) >= q.aging):
		q.lastLow = true
		return q.low.pop()
	case q.high.len() > 0:
		q.lastLow = false
		return q.high.pop()
	case q.bg.len() > 0:
		return q.bg.pop()
	}
	return nil
}

// unpop puts r, just popped, back where it was: at the head of its class.
func (q *queue) unpop(r *Request) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.class(r).pushFront(r)
}

// popFunc returns the first waiting request, priority ones first, for
// which ok is true, or nil if there is none. ok runs with the queue
// locked.
func (q *queue) popFunc(ok func(*Request) bool) *Request {
	q.mu.Lock()
	defer q.mu.Unlock()
	if r := q.high.popFunc(ok); r != nil {
		return r
	}
	if r := q.low.popFunc(ok); r != nil {
		return r
	}
	return q.bg.popFunc(ok)
}

// any reports whether ok is true for a waiting request. ok runs with the
// queue locked.
func (q *queue) any(ok func(*Request) bool) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.high.has(ok) || q.low.has(ok) || q.bg.has(ok)
}

// len returns how many requests wait.
func (q *queue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.high.len() + q.low.len() + q.bg.len()
}
