package rtu

import (
	"sync"
	"time"
)

// queue holds the transactions waiting for a line, in three classes:
// priority ones (writes, operators' clients) go before plain ones, and
// background ones (the gateway's own polls) after both. A plain request
// that has waited longer than aging takes every other turn from the
// priority ones, so reads are never starved by a stream of writes, and
// writes still wait at most one read when every read in the queue has
// waited that long (a line that is simply overloaded).
//
// Within a class the line's time is shared between clients (flows) by
// what their transactions cost it, not by their number: start-time fair
// queuing, with the time each transaction held the line as its cost. A
// flow's next request is tagged with when its last one finished in
// virtual time (its start tag plus its cost), and the request with the
// smallest tag goes first; the virtual clock is the tag of the last
// request that went out, so a flow that was idle starts at it, with no
// credit saved up; and when no request waits at all, every flow's debt
// is forgotten. A client whose requests end in timeouts (a dead unit,
// 300 ms each) has had its share after one of them and waits while
// clients whose units answer in 3 ms take theirs; with one request
// waiting per client, equal costs make it round-robin, as before.
//
// The queue also keeps the line's silence budget (see silence), which
// admits requests to units not known to answer.
type queue struct {
	mu        sync.Mutex
	high, low fifo
	bg        fifo          // background: served only when no client's request waits
	size      int           // requests waiting at most
	aging     time.Duration // a plain request that waited this long takes every other turn
	lastLow   bool          // the last one served was plain
	// lastLowBefore is lastLow before the last pop, for yields.
	lastLowBefore bool
	closed        bool          // the line retired: push adds nothing
	wake          chan struct{} // senders: push; receiver: the line's goroutine
	// Fair queuing: the virtual clock, and each flow's finish tag while
	// it is ahead of the clock (a flow at or behind it has no entry).
	vclock  int64
	finish  map[uint64]int64
	silence silence
}

// pushed is what push did with a request.
type pushed int

const (
	queued  pushed = iota
	full           // the queue holds size requests
	closed         // the line retired (see close)
	refused        // the silence budget has no room for it (Request.Unknown)
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

// remove takes out the request at index i of items.
func (f *fifo) remove(i int) *Request {
	r := f.items[i]
	copy(f.items[i:], f.items[i+1:])
	f.items[len(f.items)-1] = nil
	f.items = f.items[:len(f.items)-1]
	if f.head == len(f.items) {
		f.items, f.head = f.items[:0], 0
	}
	return r
}

// popFunc removes and returns the first request for which ok is true.
func (f *fifo) popFunc(ok func(*Request) bool) *Request {
	for i := f.head; i < len(f.items); i++ {
		if ok(f.items[i]) {
			return f.remove(i)
		}
	}
	return nil
}

// fairest returns the index of the request with the smallest start tag
// (its flow's finish tag, but not before the clock), the earliest of
// equals.
func (f *fifo) fairest(clock int64) int {
	best, bestTag := -1, int64(0)
	for i := f.head; i < len(f.items); i++ {
		if tag := max(f.items[i].tag, clock); best < 0 || tag < bestTag {
			best, bestTag = i, tag
			if tag == clock {
				break // none can be earlier
			}
		}
	}
	return best
}

func newQueue(size int, aging time.Duration, share float64) *queue {
	return &queue{size: size, aging: aging, wake: make(chan struct{}, 1), finish: make(map[uint64]int64),
		silence: silence{share: share}}
}

// push adds r to its class, unless the queue is full or closed, or r is
// to a unit not known to answer and the silence budget has no room for
// it. est is what r's silence would cost the line (see silence.mayGo).
func (q *queue) push(r *Request, now time.Time, est time.Duration) pushed {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return closed
	}
	if q.high.len()+q.low.len()+q.bg.len() >= q.size {
		q.mu.Unlock()
		return full
	}
	if r.Unknown {
		if ok, _ := q.silence.mayGo(r.Flow, r.Probe, now, est); !ok {
			q.mu.Unlock()
			return refused
		}
	} else {
		q.silence.started(r.Flow, now)
	}
	r.tag = q.finish[r.Flow]
	q.class(r).push(r)
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
	return queued
}

// done books a request that has left the queue for good, served or not:
// its flow's finish tag (cost is the time it held the line: 0 if it never
// went out), and what the silence budget counts. A silence (see
// silence.done) is the time from start to end and guard after.
func (q *queue) done(r *Request, cost time.Duration, start, end time.Time, guard time.Duration) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if cost > 0 {
		start := max(r.tag, q.vclock)
		q.vclock = start
		q.finish[r.Flow] = start + int64(cost)
		if len(q.finish) > sweepFlows {
			for f, t := range q.finish {
				if t <= q.vclock {
					delete(q.finish, f)
				}
			}
		}
	}
	q.silence.done(r, start, end, guard)
}

// mayGo asks the silence budget, when r's turn on the line comes, whether
// r (Unknown) may go out now; it notes whether r takes the budget.
func (q *queue) mayGo(r *Request, now time.Time, est time.Duration) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	ok, budgeted := q.silence.mayGo(r.Flow, r.Probe, now, est)
	r.budgeted = budgeted
	return ok
}

// sweepFlows is how many flows' tags the queue keeps before it forgets
// those the clock has passed.
const sweepFlows = 1024

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

// pop returns the next request to serve, or nil when none waits. (The
// virtual clock moves to its start tag when it is done: see done.)
func (q *queue) pop(now time.Time) *Request {
	q.mu.Lock()
	defer q.mu.Unlock()
	f, i := q.choose(now)
	if f == nil {
		// No one waits: no one is owed a share. (So the tags of clients
		// that came and went are not kept either.)
		if len(q.finish) > 0 {
			clear(q.finish)
		}
		return nil
	}
	q.lastLowBefore = q.lastLow
	if f != &q.bg {
		q.lastLow = f == &q.low
	}
	return f.remove(i)
}

// choose returns the class and index of the request to serve next, or
// nil: a plain one if no priority one waits, or if it has waited past
// aging and the last one served was a priority one; else a priority
// one; the background ones last. Within a class, the smallest start tag,
// the earliest of equals.
func (q *queue) choose(now time.Time) (*fifo, int) {
	switch {
	case q.low.len() > 0 && (q.high.len() == 0 || !q.lastLow && now.Sub(q.low.peek().enqueued) >= q.aging):
		return &q.low, q.low.fairest(q.vclock)
	case q.high.len() > 0:
		return &q.high, q.high.fairest(q.vclock)
	case q.bg.len() > 0:
		return &q.bg, q.bg.head
	}
	return nil, 0
}

// yields reports whether another request should go before r, popped a
// moment ago, were r back in its place: a client whose answer has just
// gone out has had time to send its next (the line asks once it is
// quiet for r, t3.5 at least after the last transaction), and one that
// has had less of the line goes first, however quickly the line turned
// to r. A request that canGo says cannot go now (it must wait for its
// unit's owed answers) is not one to yield to. r is not put back.
func (q *queue) yields(r *Request, canGo func(*Request, time.Time) bool) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.high.len()+q.low.len()+q.bg.len() == 0 {
		return false // the common case: none to yield to, and no clock read
	}
	now := time.Now()
	c := q.class(r)
	c.pushFront(r)
	// As pop chose r: with the turn it found (lastLow before it).
	popped := q.lastLow
	q.lastLow = q.lastLowBefore
	f, i := q.choose(now)
	yield := (f != c || i != c.head) && canGo(f.items[i], now)
	c.remove(c.head)
	if !yield {
		q.lastLow = popped
	} // else as if r had not been popped: it goes back (unpop)
	return yield
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
