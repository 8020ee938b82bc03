package rtu

import (
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/mcpgw/mcpgw/pkg/pdu"
)

// The guard between transactions: what a transaction leaves the next
// to respect, the answers a unit may still owe, and the wait before a
// frame goes out (see the package comment).

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
	for v := range b.units {
		if o := &b.units[v].owed; byte(v) != u && o.n > 0 && now.Before(o.until) {
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
	o := &b.units[r.Unit].owed
	return o.n > 0 && now.Before(o.until) && o.confusable(r)
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
		g = max(g, min(b.units[p.unit].slowest, p.timeout))
	}
	return g
}

// owe records that unit r.Unit may still send n answers to r's frames
// that went out at sends, the device free to start on the first of them
// at free. None can come once the device has had time to answer each
// frame (see due). Answers still owed for an earlier request come before
// these; they are kept: the unit then owes answers to two requests, and
// every request to it is confusable.
func (b *Bus) owe(r *Request, free time.Time, sends []time.Time, timeout time.Duration, n int) {
	o := &b.units[r.Unit].owed
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
	gap := max(b.cfg.FrameGap, r.Gap) // the least silence before r's frame
	quiet, guarded := gap, p.guard
	guardedFrom := -1 // the unit whose answers on their way the guard is against
	b.guardOther = p.guard && p.unit != r.Unit
	// settle returns after silence: whatever comes next starts a frame.
	defer func() { b.babbled = false }()
	if p.guard {
		guardedFrom = int(p.unit)
		quiet = max(quiet, b.prompt(p.unit, p.timeout))
		if p.failed {
			quiet = max(quiet, min(b.units[p.unit].slowest, p.timeout))
		}
		p.guard = false
	}
	o := &b.units[r.Unit].owed
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
			b.units[r.Unit].silent = false // it answers, late
		}
		for ; booked < k && o.n > 0; booked++ {
			b.units[r.Unit].latest = max(b.units[r.Unit].latest, o.heard(b.lastIO))
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
				quiet = gap
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
			if b.cfg.Capture != nil {
				b.cfg.Capture.Received(b.lastIO, b.lastIO, b.rx[:n])
			}
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
