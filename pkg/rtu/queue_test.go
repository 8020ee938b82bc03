package rtu

import (
	"fmt"
	"testing"
	"time"
)

// TestQueueOrder: priority requests go first; a plain request that has
// waited past aging takes every other turn, never more.
func TestQueueOrder(t *testing.T) {
	q := newQueue(100, time.Second, 0)
	now := time.Now()
	push := func(name string, prio bool, waited time.Duration) {
		q.push(&Request{Unit: name[0], Priority: prio, enqueued: now.Add(-waited)}, now, 0)
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
	q.push(&Request{Unit: 'p', Background: true, enqueued: now.Add(-time.Hour)}, now, 0)
	push("a", false, 0)
	push("W", true, 0)
	q.push(&Request{Unit: 'q', Background: true, enqueued: now.Add(-time.Hour)}, now, 0)
	push("b", false, 2*time.Second)
	if got := order(); got != "Wabpq" {
		t.Fatalf("with background requests: %s, want Wabpq", got)
	}
	q = newQueue(2, time.Second, 0)
	if q.push(&Request{}, now, 0) != queued || q.push(&Request{Priority: true}, now, 0) != queued || q.push(&Request{}, now, 0) != full {
		t.Fatal("a queue of 2 took a third request")
	}
	// Closing hands back what waits, priority first, and refuses more.
	if rest := q.close(); len(rest) != 2 || !rest[0].Priority || rest[1].Priority {
		t.Fatalf("close returned %v", rest)
	}
	if q.push(&Request{}, now, 0) != closed || q.len() != 0 {
		t.Fatal("a closed queue took a request")
	}
}

// TestQueueSkip: a request that must wait keeps its place while others go
// first, in their order.
func TestQueueSkip(t *testing.T) {
	q := newQueue(100, time.Second, 0)
	now := time.Now()
	for _, n := range "abcde" {
		q.push(&Request{Unit: byte(n), enqueued: now}, now, 0)
	}
	q.push(&Request{Unit: 'W', Priority: true, enqueued: now}, now, 0)
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

// TestFairByCost: two clients keep a request waiting each; one's
// transactions hold the line 100 ms (a unit that times out), the
// other's 1 ms. Turns by count would give the first 99 % of the line;
// shared by cost, each gets half. A client that was idle goes before
// busy ones that have had their share, once.
func TestFairByCost(t *testing.T) {
	q := newQueue(100, time.Second, 0)
	now := time.Now()
	cost := map[uint64]time.Duration{1: 100 * time.Millisecond, 2: time.Millisecond}
	used := map[uint64]time.Duration{}
	q.push(&Request{Flow: 1, enqueued: now}, now, 0)
	q.push(&Request{Flow: 2, enqueued: now}, now, 0)
	for range 2000 {
		r := q.pop(now)
		used[r.Flow] += cost[r.Flow]
		q.done(r, cost[r.Flow], now, now, 0)
		q.push(&Request{Flow: r.Flow, enqueued: now}, now, 0) // its next
	}
	share := float64(used[1]) / float64(used[1]+used[2])
	if share < 0.45 || share > 0.55 {
		t.Fatalf("the slow client had %.0f %% of the line, want half (%v against %v)", 100*share, used[1], used[2])
	}
	// A third client, idle until now, goes next; then it waits its turn.
	q.push(&Request{Flow: 3, enqueued: now}, now, 0)
	r := q.pop(now)
	if r.Flow != 3 {
		t.Fatalf("a client that was idle: flow %d went first", r.Flow)
	}
	q.done(r, 100*time.Millisecond, now, now, 0)
	q.push(&Request{Flow: 3, enqueued: now}, now, 0)
	if r := q.pop(now); r.Flow == 3 {
		t.Fatal("the newcomer went first twice, after a 100 ms transaction")
	}
	// Equal costs: round-robin, as the order they came in.
	q = newQueue(100, time.Second, 0)
	for f := range uint64(4) {
		q.push(&Request{Flow: f, enqueued: now}, now, 0)
	}
	var order []uint64
	for range 12 {
		r := q.pop(now)
		order = append(order, r.Flow)
		q.done(r, time.Millisecond, now, now, 0)
		q.push(&Request{Flow: r.Flow, enqueued: now}, now, 0)
	}
	if fmt.Sprint(order) != "[0 1 2 3 0 1 2 3 0 1 2 3]" {
		t.Fatalf("equal costs: %v, want round-robin", order)
	}
	// Once no one waits, no one is owed anything: the tags are
	// forgotten, however many clients came and went.
	for f := range uint64(3 * sweepFlows) {
		q.push(&Request{Flow: 100 + f, enqueued: now}, now, 0)
		q.push(&Request{Flow: 1, enqueued: now}, now, 0)
		for range 2 {
			q.done(q.pop(now), time.Millisecond, now, now, 0)
		}
	}
	if n := len(q.finish); n > sweepFlows+1 {
		t.Fatalf("%d flows' tags kept while busy", n)
	}
	for q.pop(now) != nil {
	}
	if n := len(q.finish); n != 0 {
		t.Fatalf("%d flows' tags kept once idle", n)
	}
}

// TestSilenceBudget: the first request to a unit never heard goes free
// while no other client uses the line; otherwise the budget lets it go
// if the last silence is d/share behind it and the minute has room. An
// answered one costs nothing; a probe of an offline unit goes free only
// while no client at all uses the line.
func TestSilenceBudget(t *testing.T) {
	const est = 600 * time.Millisecond
	q := newQueue(100, time.Second, 0.05)
	t0 := time.Unix(1000, 0)
	unknown := func(flow uint64, probe bool) *Request {
		return &Request{Flow: flow, Unknown: true, Probe: probe, Unit: 9}
	}
	mayGo := func(r *Request, at time.Time) bool { return q.mayGo(r, at, est) }
	// Nobody uses the line: free, both kinds.
	for _, probe := range []bool{false, true} {
		if r := unknown(1, probe); !mayGo(r, t0) || r.budgeted {
			t.Fatalf("an idle line: probe %v: not free", probe)
		}
	}
	// Client 2 polls a unit that answers.
	known := &Request{Flow: 2, Unit: 1}
	q.push(known, t0, est)
	q.done(q.pop(t0), time.Millisecond, t0, t0, 0)
	at := t0.Add(100 * time.Millisecond)
	// Its own first request to a unit never heard is free: its own polls
	// do not hold it back. Another client's takes the budget.
	if r := unknown(2, false); !mayGo(r, at) || r.budgeted {
		t.Fatal("a client's first request to a new unit was held by its own polls")
	}
	// A silence: the next not before 12 s after it started.
	silent := func(r *Request, start time.Time) {
		r.Outcome, r.Attempts = Timeout, 1
		q.done(r, est, start, start.Add(est/2), est/2)
	}
	r := unknown(1, false)
	if !mayGo(r, at) || !r.budgeted {
		t.Fatal("another client's first request: not budgeted")
	}
	silent(r, at)
	q.silence.touch(2, at.Add(11*time.Second)) // client 2 still polls
	if q.push(unknown(3, false), at.Add(11*time.Second), est) != refused {
		t.Fatal("a second silence before the spacing")
	}
	// A probe is held by anyone's polls, its own client's too.
	if mayGo(unknown(2, true), at.Add(11*time.Second)) {
		t.Fatal("a probe went free while its own client polls")
	}
	q.silence.touch(2, at.Add(12*time.Second))
	r = unknown(1, true)
	if !mayGo(r, at.Add(12*time.Second)) || !r.budgeted {
		t.Fatal("no budget 12 s after a 600 ms silence")
	}
	// Answered: it costs nothing; the next may go at once.
	r.Outcome, r.Attempts = OK, 1
	q.done(r, time.Millisecond, at, at, 0)
	if !mayGo(unknown(4, true), at.Add(12*time.Second)) {
		t.Fatal("an answered request spent the budget")
	}
	// A request turned back at its turn (the budget gone since it was
	// queued), or never sent, costs nothing either.
	r = unknown(5, false)
	r.Outcome = OverBudget
	q.done(r, 0, at, at, 0)
	if !mayGo(unknown(4, true), at.Add(12*time.Second)) {
		t.Fatal("a request that never went out spent the budget")
	}
	// Within share of any minute.
	q = newQueue(100, time.Second, 0.05)
	q.silence.started(2, t0)
	q.silence.spent = []spend{{t0.Add(-50 * time.Second), 1300 * time.Millisecond}, {t0.Add(-20 * time.Second), 1300 * time.Millisecond}}
	if mayGo(unknown(1, true), t0) {
		t.Fatal("3 s of silence in a minute exceeded: 2.6 s spent and 0.6 s more admitted")
	}
	if !mayGo(unknown(1, true), t0.Add(11*time.Second)) {
		t.Fatal("no room once a silence has left the minute")
	}
	// Free probes on a quiet line: spaced to a quarter of it.
	q = newQueue(100, time.Second, 0.05)
	r = unknown(1, true)
	if !mayGo(r, t0) || r.budgeted {
		t.Fatal("a probe on a quiet line was not free")
	}
	r.Outcome, r.Attempts = Timeout, 1
	q.done(r, est, t0, t0.Add(est/2), est/2) // 600 ms
	if mayGo(unknown(1, true), t0.Add(2*time.Second)) {
		t.Fatal("a free probe 2 s after a 600 ms one: more than a quarter of the line")
	}
	if !mayGo(unknown(1, true), t0.Add(2400*time.Millisecond)) {
		t.Fatal("no free probe 2.4 s after a 600 ms one")
	}
	if r := unknown(1, false); !mayGo(r, t0.Add(time.Second)) || r.budgeted {
		t.Fatal("a first request to an unseen unit was held by a free probe's spacing")
	}
	// A share of 0: only free ones.
	q = newQueue(100, time.Second, 0)
	q.silence.started(2, t0)
	if mayGo(unknown(1, true), t0.Add(time.Hour)) {
		t.Fatal("probe_share 0: a budgeted request went")
	}
}

// TestYields: once the line is quiet for the request it popped, it goes
// unless another that arrived meanwhile should go first; the answer
// agrees with pop, so a request never yields to one that would yield
// back (writes and aged reads taking turns).
func TestYields(t *testing.T) {
	now := time.Now()
	yes := func(*Request, time.Time) bool { return true }
	q := newQueue(100, time.Second, 0)
	q.push(&Request{Flow: 1, enqueued: now.Add(-2 * time.Second)}, now, 0)
	q.push(&Request{Flow: 2, Priority: true, enqueued: now}, now, 0)
	q.push(&Request{Flow: 3, Priority: true, enqueued: now}, now, 0)
	for range 3 {
		r := q.pop(now)
		if q.yields(r, yes) {
			t.Fatalf("flow %d yielded to what pop would not choose", r.Flow)
		}
		q.done(r, time.Millisecond, now, now, 0)
	}
	// A client with a debt popped; a fresh one arrives: it goes first.
	q.push(&Request{Flow: 1, enqueued: now}, now, 0)
	r := q.pop(now)
	q.done(r, time.Second, now, now, 0)
	q.push(&Request{Flow: 1, enqueued: now}, now, 0)
	q.push(&Request{Flow: 4, enqueued: now}, now, 0)
	r = q.pop(now)
	if r.Flow != 4 {
		t.Fatalf("flow %d popped, want the fresh one", r.Flow)
	}
	q.unpop(r)
	r = q.popFunc(func(r *Request) bool { return r.Flow == 1 }) // as if it arrived first
	if !q.yields(r, yes) {
		t.Fatal("a client with a debt did not yield to a fresh one")
	}
	if q.yields(r, func(*Request, time.Time) bool { return false }) {
		t.Fatal("yielded to one that cannot go")
	}
	q.unpop(r)
	if got := q.pop(now); got.Flow != 4 {
		t.Fatalf("after yielding: flow %d, want 4", got.Flow)
	}
}
