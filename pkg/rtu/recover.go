package rtu

import (
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/mcpgw/mcpgw/pkg/ops/capture"
	"github.com/mcpgw/mcpgw/pkg/pdu"
)

// The recovery rules (the README's "How the line recovers"): what a
// transaction leaves the next to respect, the answers a unit may still
// owe, and the wait before a frame goes out.

// prevTx is what the last transaction leaves the next one to respect:
// the guard against a collision with an answer still on its way.
type prevTx struct {
	guard   bool // it had more than one attempt or failed
	failed  bool // no answer at all
	unit    byte
	timeout time.Duration
}

// owedAnswers are the answers a unit may still send to frames the line
// gave up on, and until when. A device answers in order, so its answer to
// a later frame means they came or never will.
type owedAnswers struct {
	n       int           // answers that may still come
	sends   []time.Time   // the frames that may still be answered, in order: when each went out
	free    time.Time     // when the device was free to start on the first of them
	late    time.Duration // the unit's lateness (see lateness)
	until   time.Time     // none can come after this
	timeout time.Duration // the unit's timeout for them
	any     bool          // they answer more than one request: every request to the unit is confusable
	pdu     [pdu.MaxSize]byte
	pn      int
}

// due returns when the last answer owed can end at the latest: the
// device starts on the first frame when it is free, on each later one
// once that frame has gone out and the answer before it is due, and
// answers each within its lateness.
func (o *owedAnswers) due() time.Time {
	d := o.free.Add(o.late)
	for _, s := range o.sends[1:] {
		d = maxTime(d, s).Add(o.late)
	}
	return d
}

// heard books an owed answer that ended at t, and returns how late it
// was: from when the device could have started on the frame it answered.
//
// The answer is the earliest frame's whose answer could still end at t:
// a frame whose answer was due more than a sixteenth of the lateness
// before t (the time the line may take to notice an answer) was never
// answered, and the device, answering in order, has moved on. So after
// a retry that heard nothing, an answer that ends long after the first
// attempt's was due is the retry's: nothing more is owed, where counting
// it as the first attempt's would keep the line waiting another lateness
// for an answer the device will never send.
func (o *owedAnswers) heard(t time.Time) time.Duration {
	slack := o.late / 16
	d, j := o.free.Add(o.late), 0
	for j < len(o.sends)-1 && t.After(d.Add(slack)) {
		j++
		d = maxTime(d, o.sends[j]).Add(o.late)
	}
	// The device got to frame j no earlier than it went out and than the
	// answer before it ended: from then, the sample is never less than
	// its lateness. (From the first frame, it would add the time the
	// device spent on the answers before, and one device late twice in a
	// row would set the unit's lateness to both.)
	lateBy := t.Sub(maxTime(o.free, o.sends[j]))
	o.sends = o.sends[:copy(o.sends, o.sends[j+1:])]
	o.n = min(o.n-1, len(o.sends))
	o.free = t
	if o.n > 0 {
		o.until = o.due()
	}
	return lateBy
}

// confusable reports whether an owed answer could pass for r's answer.
func (o *owedAnswers) confusable(r *Request) bool {
	return o.any || Confusable(o.pdu[:o.pn], r.PDU)
}

// othersQuiet reports whether no unit but u may be talking now: none
// owes an answer the line gave up on, and the last guard (see settle) was
// not against another unit's. A frame whose CRC fails may have any byte
// wrong, its address too: only then can it be taken for u's. It looks at
// every unit's owed answers, so it is asked only when such a frame needs
// judging, never on every transaction.
func (b *Bus) othersQuiet(u byte) bool {
	if b.guardOther {
		return false
	}
	now := time.Now()
	for v := range b.owed {
		if o := &b.owed[v]; byte(v) != u && o.n > 0 && now.Before(o.until) {
			return false
		}
	}
	return true
}

// canGo reports whether r may go out now, rather than wait for its unit's
// owed answers (queue.yields asks).
func (b *Bus) canGo(r *Request, now time.Time) bool { return !b.mustWait(r, now) }

// mustWait reports whether r's unit owes answers that could pass for r's.
func (b *Bus) mustWait(r *Request, now time.Time) bool {
	o := &b.owed[r.Unit]
	return o.n > 0 && now.Before(o.until) && o.confusable(r)
}

// serve runs one transaction; Run calls it only with the port open.
//
// The rules that decide when the line may carry the next frame, and which
// frames are a request's answer, are in the README ("How the line
// recovers"); in short:
//   - until the next frame is sent, the line belongs to the transaction in
//     flight: a frame that fits its request (unit, function, shape; every
//     attempt sends the same bytes) is its answer, whether it comes during
//     an attempt or in the silence before a retry;
//   - an attempt ends at its timeout, or earlier, at t3.5 of silence after
//     a complete frame that failed its CRC or did not fit: the device has
//     finished talking; the retry follows after t3.5 of silence;
//   - between transactions, settle keeps the line quiet only as long as an
//     answer still owed could arrive and be taken for the next request's,
//     or collide with it.
//
// It reports false if r was deferred (see settle): r is not done, and
// goes back to the queue.
func (b *Bus) serve(r *Request) bool {
	if b.cfg.QueueTimeout > 0 && time.Since(r.enqueued) > b.cfg.QueueTimeout {
		r.Outcome = Expired
		return true
	}
	timeout, retries := r.Timeout, r.Retries
	if timeout <= 0 {
		timeout = b.cfg.Timeout
	}
	if retries < 0 {
		retries = b.cfg.Retries
	}
	r.adu = AppendADU(r.adu[:0], r.Unit, r.PDU)
	err := b.settle(r)
	if errors.Is(err, errDeferred) {
		return false
	}
	if err == nil && b.queue.yields(r, b.canGo) {
		return false // another goes first; r keeps its place
	}
	if err == nil && r.Unknown && !b.queue.mayGo(r, b.settled, 2*timeout) {
		// A silence came while it waited: the budget turns it back.
		r.Outcome = OverBudget
		return true
	}
	if err == nil && r.Skip != nil && r.Skip() {
		// Asked now, after the wait for the line: a transaction that
		// failed just before has its guard, and the handler that set
		// Skip has had that time to learn of the failure.
		r.Outcome = Skipped
		return true
	}
	attempts := 1 + retries
	if b.silent[r.Unit] || r.Unknown {
		// Its last transaction heard nothing at all, and nothing it owed
		// has come since (see settle), or it is not known to answer at
		// all (a unit never heard, or offline): one attempt. Retrying a
		// device that missed every attempt costs the line a timeout for
		// little chance.
		attempts = 1
	}
	unknownTimeout := timeout
	if r.Unknown {
		// The one attempt listens for the timeout and the guard a
		// failure would leave after it (a unit's pace is not known
		// before it answers: the timeout): the same silence, and a
		// device slower than its timeout is still heard, and found.
		unknownTimeout = 2 * timeout
	}
	b.stats.requests.Add(1)
	if err != nil {
		b.closePort(err)
		r.Outcome, r.Err = LineDown, err
		return true
	}
	// A unit that owes nothing answers at its normal pace: only then is
	// its response time measured.
	clean := b.owed[r.Unit].n == 0
	b.brokenHeard = 0
	var first, sent time.Time // when the first and the last attempt went out
	unheard := 0              // attempts that ended with nothing from the device: their answers may still come
	unheardFrom := 0          // the number of the first attempt that heard nothing (r.Attempts then)
	b.sends = b.sends[:0]
	for i := 0; i < attempts; i++ {
		b.unheard = unheard > 0
		t := timeout
		if r.Unknown && i == 0 {
			t = unknownTimeout
		}
		sent, err = b.attempt(r, t)
		b.sends = append(b.sends, sent)
		if first.IsZero() {
			first = sent
		}
		if err == nil {
			b.answered(r, first, sent, timeout, clean, unheard)
			return true
		}
		if !b.finished {
			unheard++
			if unheardFrom == 0 {
				unheardFrom = r.Attempts
			}
		} else if r.Unknown && i == 0 {
			// A broken answer: the device is there. It gets its
			// retries, as any unit that answers.
			attempts = 1 + retries
		}
		r.Err = err
		if errors.As(err, new(ioError)) {
			b.closePort(err)
			r.Outcome = LineDown
			b.prev.guard = false
			return true
		}
	}
	r.Outcome = Timeout
	b.stats.timeouts.Add(1)
	b.silent[r.Unit] = unheard == r.Attempts
	// Every attempt the device did not answer, broken, may still be; if
	// it answered each, nothing is on its way.
	b.prev.guard = false
	if unheard > 0 {
		b.lastIO = time.Now() // the guard counts from here
		if b.brokenPromptly(r.Unit, sent, timeout) {
			// Nothing owed; at most the last attempt's answer, promptly.
			b.prev = prevTx{guard: true, unit: r.Unit, timeout: timeout}
		} else {
			b.prev = prevTx{guard: true, failed: true, unit: r.Unit, timeout: timeout}
			// Until the first attempt that heard nothing, the device
			// answered each (broken): it was free when that one went
			// out. From then on, any frame may still be answered, one
			// after the other (a broken answer may have been an earlier
			// frame's).
			owed := b.sends[unheardFrom-1:]
			b.owe(r, owed[0], owed, timeout, unheard)
		}
		if r.Unknown && !b.finished {
			// Its attempt listened through the guard already.
			b.prev.guard = false
		}
	}
	return true
}

// guardAfter is the guard against a collision that r, just served,
// leaves the next transaction (see settle), as far as the line knows it
// now.
func (b *Bus) guardAfter(r *Request) time.Duration {
	p := &b.prev
	if !p.guard || p.unit != r.Unit {
		return 0
	}
	g := b.prompt(p.unit, p.timeout)
	if p.failed {
		g = max(g, min(b.slowest[p.unit], p.timeout))
	}
	return g
}

// brokenPromptly reports whether the last attempt, sent at sent, ended on
// a broken answer that came at the unit's normal pace. That answer was
// the last attempt's, and a device answers in order, so what the earlier
// attempts did not hear will not come: nothing is owed, and the guard
// against a collision is the unit's prompt time, not its slowest answer.
// (Were it instead an earlier attempt's answer, late, the last attempt's
// own answer would follow as promptly as a device answers what it
// received while busy, within that guard, and be drained by it.) This is
// rule 3 of the README for a transaction that failed.
func (b *Bus) brokenPromptly(u byte, sent time.Time, timeout time.Duration) bool {
	return b.finished && b.respN[u] >= trustAfter && b.finishedAt.Sub(sent) <= b.prompt(u, timeout)
}

// answered books a transaction that got its answer (or sent a
// broadcast): the unit's response times, and what the next transactions
// must respect.
func (b *Bus) answered(r *Request, first, sent time.Time, timeout time.Duration, clean bool, unheard int) {
	b.prev.guard = false
	if r.Unit == pdu.Broadcast {
		r.Outcome = Sent
		return
	}
	r.Outcome = OK
	b.stats.answers.Add(1)
	if _, ok := pdu.IsException(r.Resp); ok {
		b.stats.exceptions.Add(1)
	}
	u := r.Unit
	b.silent[u] = false
	b.slowest[u] = decayMax(b.slowest[u], b.lastIO.Sub(first))
	b.latest[u] = max(b.latest[u], b.lastIO.Sub(first))
	// The answer is to one of r's frames, the last ones the unit got: all
	// it owed before has come or never will.
	b.owed[u].n = 0
	if r.Attempts == 1 {
		// An answer slower than half the timeout is not the unit's normal
		// pace, whatever held it up.
		if d := b.lastIO.Sub(sent); clean && d <= timeout/2 {
			b.respTime[u] = decayMax(b.respTime[u], d)
			b.respN[u] = min(b.respN[u]+1, trustAfter)
			b.learnStart(r, sent)
		}
		return
	}
	if unheard > 0 {
		b.prev = prevTx{guard: true, unit: u, timeout: timeout}
	}
	// After a retry the answer may have been an earlier attempt's, late
	// (one that heard nothing: one that got a broken answer has had it),
	// and then as many later answers are still to come. An answer within
	// the unit's normal response time after the last attempt is taken as
	// that attempt's (nothing owed); a slower one, or any before the line
	// knows the unit's response time, as an earlier attempt's.
	if unheard == 0 || b.respN[u] >= trustAfter && b.lastIO.Sub(sent) <= b.prompt(u, timeout) {
		return
	}
	// Broken answers heard while the unit was the only one talking were
	// its answers too: a device answers each frame at most once, so only
	// the frames it has not answered yet may still be.
	n := unheard
	if b.brokenHeard > 0 {
		n = min(n, r.Attempts-b.brokenHeard-1)
	}
	if n <= 0 {
		return
	}
	// The device has just finished an answer: the frames it owes answers
	// to come after it.
	b.owe(r, b.lastIO, b.sends[len(b.sends)-n:], timeout, n)
}

// owe records that unit r.Unit may still send n answers to r's frames
// that went out at sends, the device free to start on the first of them
// at free. None can come once the device has had time to answer each
// frame (see due). Answers still owed for an earlier request come before
// these; they are kept: the unit then owes answers to two requests, and
// every request to it is confusable.
func (b *Bus) owe(r *Request, free time.Time, sends []time.Time, timeout time.Duration, n int) {
	o := &b.owed[r.Unit]
	late := b.lateness(r.Unit, timeout)
	if o.n > 0 && time.Now().Before(o.until) {
		o.any = o.any || !Confusable(o.pdu[:o.pn], r.PDU)
		o.n += n
		o.sends = append(o.sends, sends...)
		o.late = max(o.late, late)
		o.until = o.due()
		return
	}
	*o = owedAnswers{n: n, sends: append(o.sends[:0], sends...), free: free, late: late, timeout: timeout}
	o.pn = copy(o.pdu[:], r.PDU)
	o.until = o.due()
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// decayMax is a maximum that forgets: each new sample lowers the old
// maximum by a sixteenth before comparing.
func decayMax(old, sample time.Duration) time.Duration {
	return max(sample, old-old/16)
}

// lateness is how long after it starts on a frame unit u may still
// answer it: the latest it has ever answered (counted from when it could
// start on the frame), at least twice the timeout, at most four times.
func (b *Bus) lateness(u byte, timeout time.Duration) time.Duration {
	return min(max(b.latest[u], 2*timeout), 4*timeout)
}

// trustAfter is how many answers to first attempts the line measures
// before it trusts a unit's response time.
const trustAfter = 4

// prompt is how soon after a request unit u answers when nothing is
// wrong: twice its measured response time plus t3.5, at least twice t3.5,
// at most half the timeout; the timeout until the line has measured
// enough of its answers.
func (b *Bus) prompt(u byte, timeout time.Duration) time.Duration {
	if b.respN[u] < trustAfter {
		return timeout
	}
	return min(max(2*b.respTime[u]+b.cfg.FrameGap, 2*b.cfg.FrameGap), timeout/2)
}

// settle waits before a transaction's first frame until the line is free
// for it:
//   - the broadcast turnaround, and t3.5 of silence;
//   - after a transaction that needed a retry or failed, a guard against a
//     collision with an answer still on its way: the line quiet for that
//     unit's prompt time (after a failed one, for its slowest recent
//     answer), never longer than its timeout;
//   - if r's unit still owes answers that could pass for r's (same
//     function and shape, see Confusable), until they have all come or
//     none can come any more (see lateness). Owed answers that could not
//     pass for r's would be told apart and dropped, so r need not wait.
//     Meanwhile a request that need not wait goes first: settle returns
//     errDeferred, and r goes back to the head of the queue.
//
// It always looks at least once, without waiting, at what arrived since
// the last frame. Bytes found there are a late answer or noise: they are
// recorded and logged like any discarded bytes, and the line must then be
// quiet for the gap again before the request goes out, as the spec asks
// of a master. (This read is also cheaper than flushing the input: one
// poll instead of an ioctl, a few microseconds on every transaction.)
func (b *Bus) settle(r *Request) error {
	if d := time.Until(b.quietTill); d > 0 {
		time.Sleep(d)
	}
	p := &b.prev
	quiet, guarded := b.cfg.FrameGap, p.guard
	guardedFrom := -1 // the unit whose answers on their way the guard is against
	b.guardOther = p.guard && p.unit != r.Unit
	// settle returns after silence: whatever comes next starts a frame.
	defer func() { b.babbled = false }()
	if p.guard {
		guardedFrom = int(p.unit)
		quiet = max(quiet, b.prompt(p.unit, p.timeout))
		if p.failed {
			quiet = max(quiet, min(b.slowest[p.unit], p.timeout))
		}
		p.guard = false
	}
	o := &b.owed[r.Unit]
	var until time.Time // wait for owed answers until then
	if o.n > 0 {
		if !time.Now().Before(o.until) {
			o.n = 0
		} else if o.confusable(r) {
			until, guarded = o.until, true
		}
	}
	// Owed answers are counted over what came right after the last answer
	// taken (already logged with it) and what is drained now.
	b.scan = append(b.scan[:0], b.tail...)
	drained := len(b.scan) // b.scan[drained:] is what settle drains
	b.tail = b.tail[:0]
	total := 0
	defer func() {
		if total > 0 {
			b.reportLate(r, b.scan[drained:], total, guarded)
		}
	}()
	// count settles the owed answers that have come: they may have come
	// with the last answer, or come now. A broken one counts while r's
	// unit is the only one that may be talking.
	alone := !until.IsZero() && !b.babbled && b.othersQuiet(r.Unit)
	booked := 0 // the answers counted so far, booked with o.heard
	count := func() {
		if until.IsZero() || o.any {
			return
		}
		k := countAnswers(b.scan, r.Unit, o.pdu[:o.pn], alone)
		if k > booked {
			b.silent[r.Unit] = false // it answers, late
		}
		for ; booked < k && o.n > 0; booked++ {
			b.latest[r.Unit] = max(b.latest[r.Unit], o.heard(b.lastIO))
		}
		until = o.until
		if o.n == 0 {
			// Every answer owed has come: what remains is the guard
			// against a collision. If the last transaction's guard was
			// against this unit's answers, they are the ones that came,
			// and nothing else from it is on its way: the guard is its
			// prompt time after them, not its slowest answer.
			until = time.Time{}
			if guardedFrom == int(r.Unit) {
				quiet = b.cfg.FrameGap
			}
			quiet = max(quiet, b.prompt(r.Unit, o.timeout))
		}
	}
	count()
	for {
		now := time.Now()
		wait := max(quiet-now.Sub(b.lastIO), until.Sub(now), 0)
		if !until.IsZero() && now.Sub(b.lastIO) >= quiet {
			// Only the owed answers hold r now. A request that need not
			// wait for them goes first; r keeps its place.
			if b.queue.any(func(q *Request) bool { return !b.mustWait(q, now) }) {
				return errDeferred
			}
			wait = min(wait, deferCheck)
		}
		b.port.SetReadTimeout(wait)
		n, err := b.port.Read(b.rx[:])
		if err != nil {
			return ioError{fmt.Errorf("read: %w", err)}
		}
		if n > 0 {
			b.lastIO = time.Now()
			b.cfg.Capture.Record(capture.RX, b.lastIO, b.lastIO, b.rx[:n])
			b.stats.lateBytes.Add(uint64(n))
			total += n
			b.scan = append(b.scan, b.rx[:min(n, cap(b.scan)-len(b.scan))]...)
			count()
			continue
		}
		if now := time.Now(); now.Sub(b.lastIO) >= quiet && !now.Before(until) {
			if !until.IsZero() {
				o.n = 0 // none can come any more
			}
			b.settled = now
			return nil
		}
	}
}

// errDeferred means settle let other requests go before r.
var errDeferred = errors.New("rtu: deferred behind requests that need not wait")

// deferCheck is how often a request waiting for its unit's owed answers
// looks for others that could go first.
const deferCheck = 5 * time.Millisecond

// countAnswers counts the whole frames in buf that answer request req to
// unit: the owed answers that arrived. buf starts where a frame may
// start (after an answer, or after silence).
//
// A frame whose CRC fails counts only if broken is set and it has the
// answer's exact shape (unit, function, byte count or echo, length) at a
// frame boundary: right at the start, or right after a frame that
// counted or had a good CRC. Any of its bytes may be wrong, its unit's
// address too, so the caller sets broken only while no other unit can be
// talking: then it can only be this unit's answer, broken. After bytes
// that fit no frame, where the next frame starts is unknown, and only
// frames with a good CRC count.
func countAnswers(buf []byte, unit byte, req []byte, broken bool) int {
	e := ExpectAnswer(unit, req)
	k := 0
	aligned := true // buf starts where a frame starts
	for len(buf) > 0 {
		frame, used, err := Scan(buf, e.Len, false)
		if errors.Is(err, ErrNeedMore) {
			break
		}
		switch {
		case err == nil:
			if Matches(req, frame[1:len(frame)-2]) {
				k++
			}
		case broken && aligned && errors.Is(err, ErrBadCRC):
			n, ok := brokenAnswer(buf, e.Len, req)
			if !ok {
				aligned = false
				break
			}
			k++
			used = n
		default:
			aligned = false
		}
		buf = buf[used:]
	}
	return k
}

// brokenAnswer reports whether buf starts with a whole frame that has
// the shape of an answer to req (lenFn's unit and function, and what
// Matches checks), whatever its CRC, and the frame's length.
func brokenAnswer(buf []byte, lenFn LenFunc, req []byte) (n int, ok bool) {
	n, err := lenFn(buf)
	return n, err == nil && n >= MinADU && n <= len(buf) && Matches(req, buf[1:n-2])
}

// strayLogEvery is how often at most stray bytes between transactions
// are logged on a line; they are counted every time.
const strayLogEvery = time.Minute

// reportLate logs the n bytes that settle drained, of which it kept
// late (all, unless there were more than its buffer holds). After
// a failed attempt they are that attempt's late answer, logged each time.
// Otherwise they came unasked between transactions: a device repeating
// itself, noise, or the glitch some RS-485 transceivers make when they
// turn the line around, which on such a line comes with every
// transaction. Those are logged at most once a minute, with how many
// times it happened since.
// Both carry the trace of the request about to go out, r.
func (b *Bus) reportLate(r *Request, late []byte, n int, afterFailure bool) {
	attrs := []any{"line", b.cfg.Name, "before_trace", r.Trace, "bytes", n, "hex", hex.EncodeToString(late), "complete", n == len(late)}
	if afterFailure {
		b.cfg.Log.Warn("discarded a late answer", attrs...)
		return
	}
	b.strays++
	if now := time.Now(); now.Sub(b.strayLogged) >= strayLogEvery {
		b.cfg.Log.Warn("discarded stray bytes before a request", append(attrs, "times_since_last_logged", b.strays)...)
		b.strayLogged, b.strays = now, 0
	}
}
