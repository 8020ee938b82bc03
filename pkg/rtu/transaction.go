package rtu

import (
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/mcpgw/mcpgw/pkg/pdu"
)

// One transaction on the wire: its attempts, each the request out and
// its answer read in, and what was discarded on the way.

// serve runs one transaction; Run calls it only with the port open.
//
// The rules that decide when the line may carry the next frame, and which
// frames are a request's answer, are in the package comment ("How the line
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
	if b.units[r.Unit].silent || r.Unknown {
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
	clean := b.units[r.Unit].owed.n == 0
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
	b.units[r.Unit].silent = unheard == r.Attempts
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

// attempt sends r once and waits for its answer: until timeout, and then
// until the line has been silent for t3.5, since an answer that arrives
// before the next frame is sent can only be this request's. Bytes it had
// to discard are logged once, with the reason, when it ends. It returns
// when the request went out.
func (b *Bus) attempt(r *Request, timeout time.Duration) (time.Time, error) {
	b.dropped, b.why = b.dropped[:0], nil
	sent, err := b.exchange(r, timeout)
	if rerr := b.readMin(1, time.Time{}); err == nil {
		err = rerr
	}
	b.recordNoise()
	if len(b.dropped) > 0 {
		b.reportDropped(r, err)
	}
	return sent, err
}

func (b *Bus) exchange(r *Request, timeout time.Duration) (time.Time, error) {
	r.Attempts++
	b.stats.frames.Add(1)
	if _, err := b.port.Write(r.adu); err != nil {
		return time.Now(), ioError{fmt.Errorf("write: %w", err)}
	}
	start := time.Now()
	b.lastIO = start
	if b.cfg.Capture != nil {
		b.cfg.Capture.Sent(start, start, r.adu)
	}
	deadline := start.Add(timeout)
	// Past the deadline the attempt still waits for silence, but not for
	// ever on a line that babbles: at most one longest frame more.
	hardStop := deadline.Add(MaxADU*b.cfg.CharTime + b.cfg.CharGap)
	b.buf = b.buf[:0]
	if b.cfg.Echo {
		if err := b.readEcho(r.adu, deadline); err != nil {
			return start, err
		}
	}
	if r.Unit == pdu.Broadcast {
		b.quietTill = time.Now().Add(b.cfg.BroadcastDelay)
		return start, nil
	}
	b.expect = ExpectAnswer(r.Unit, r.PDU)
	var lastErr error = ErrNoAnswer
	silent := false
	b.finished = false // a broken answer came: the device has finished talking
	b.pieces = 0
	// On a line that trickles answers in, the first look is when the
	// unit's answer should have its first bytes (see startDue).
	var look time.Time // zero: wait for the first byte
	firstByte := b.startDue(r, start)
	if !firstByte.IsZero() {
		look = b.firstLook(firstByte)
	}
	looked := false
	for {
		for len(b.buf) > 0 {
			frame, used, err := Scan(b.buf, b.lenFn, silent)
			if err == nil {
				if !Matches(r.PDU, frame[1:len(frame)-2]) {
					err = ErrMismatch
					used = len(frame)
				} else {
					r.Resp = append(r.Resp[:0], frame[1:len(frame)-2]...)
					b.recordNoise()
					if b.cfg.Capture != nil {
						b.cfg.Capture.Received(b.rxStart, b.lastIO, frame)
					}
					// Bytes after the answer may be (the start of) another
					// attempt's answer: settle counts owed answers over them.
					b.tail = append(b.tail[:0], b.buf[used:]...)
					if rest := len(b.buf) - used; rest > 0 {
						b.noise(r, b.buf[used:], errTrailing)
					}
					return start, nil
				}
			}
			if errors.Is(err, ErrNeedMore) {
				break
			}
			if len(b.dropped) == 0 && b.units[r.Unit].owed.n == 0 {
				// The first thing the attempt heard, from a unit that
				// owes nothing: is it alone on the line?
				alone := b.othersQuiet(r.Unit)
				if frameEnded(err, b.buf, r.Unit, alone) && b.ownAnswer(r.Unit, start, timeout) {
					b.finished, b.finishedAt = true, b.lastIO
				}
				if alone && !b.babbled && errors.Is(err, ErrBadCRC) {
					if _, ok := brokenAnswer(b.buf, b.lenFn, r.PDU); ok {
						b.brokenHeard++
					}
				}
			}
			b.noise(r, b.buf[:used], err)
			// The attempt's failure is what broke it: a bad CRC, not the
			// pieces of that frame the scan then finds unexpected.
			if !errors.Is(lastErr, ErrBadCRC) {
				lastErr = err
			}
			b.buf = b.buf[:copy(b.buf, b.buf[used:])]
		}
		now := time.Now()
		if !now.Before(hardStop) {
			b.babbled = true
			if len(b.buf) > 0 {
				b.noise(r, b.buf, ErrShortFrame)
				lastErr = ErrShortFrame
			}
			return start, lastErr
		}
		var (
			wait time.Duration
			need = 1 // bytes the read waits for
			due  time.Time
		)
		switch {
		case len(b.buf) > 0:
			// Mid-frame: silence of t1.5 makes a frame of known length
			// incomplete; one of unpredictable length ends at t3.5.
			wait = b.cfg.CharGap
			n, err := b.lenFn(b.buf)
			switch {
			case errors.Is(err, ErrUnpredictable):
				wait = b.cfg.FrameGap
			case (err == nil || errors.Is(err, ErrNeedMore)) && n > len(b.buf) && b.minReader != nil:
				// The rest is on its way: wake when it is all here,
				// or when it is overdue by the gap. Until the length
				// is known, that is at least a whole exception.
				if errors.Is(err, ErrNeedMore) {
					n = max(n, MinAnswer)
				}
				need = n - len(b.buf)
				wait += time.Duration(need-1) * b.cfg.CharTime
				// Its first byte came by rxStart, and the rest follow
				// at most a character time apart.
				due = b.rxStart.Add(time.Duration(n-1) * b.cfg.CharTime)
			}
		case b.finished || !now.Before(deadline):
			// Over, once the line has been silent for t3.5, or the
			// longer gap the device needs before the retry.
			idle, gap := now.Sub(b.lastIO), max(b.cfg.FrameGap, r.Gap)
			if idle >= gap {
				return start, lastErr
			}
			wait = gap - idle
		default:
			wait = deadline.Sub(now)
			if !looked && !look.IsZero() && look.Before(deadline) {
				due, looked = look, true
			}
		}
		if err := b.readMin(need, due); err != nil {
			return start, err
		}
		b.port.SetReadTimeout(min(wait, hardStop.Sub(now)))
		n, err := b.port.Read(b.rx[:])
		if err != nil {
			return start, ioError{fmt.Errorf("read: %w", err)}
		}
		if n == 0 {
			silent = len(b.buf) > 0
			continue
		}
		silent = false
		b.lastIO = time.Now()
		b.pieces++
		if len(b.buf) == 0 {
			b.rxStart = b.lastIO
			if looked && b.pieces == 1 {
				b.rxStart = b.firstLooked(r.Unit, n, look, firstByte, start)
			}
		}
		b.buf = append(b.buf, b.rx[:n]...)
		if b.minReader == nil {
			b.awaitRest(hardStop)
		}
	}
}

// ownAnswer reports whether a broken answer from unit u that ends now, in
// the attempt sent at start, was that attempt's: if an earlier attempt
// heard nothing, it may be that one's answer, late, with this one's still
// to come, unless it came at the unit's normal pace. The attempt then
// listens on until its timeout.
func (b *Bus) ownAnswer(u byte, start time.Time, timeout time.Duration) bool {
	return !b.unheard || b.units[u].respN >= trustAfter && b.lastIO.Sub(start) <= b.prompt(u, timeout)
}

// frameEnded reports whether Scan's err, on the bytes buf begins with,
// shows that a frame from unit, not this request's answer, has ended: a
// whole frame that does not fit the request, or, while the unit is alone
// on the line (see Bus.othersQuiet), a frame of the predicted length with a
// bad CRC, or a frame from the unit with a garbled function code, byte
// count or length that the line then ended with silence. If it is the
// first thing heard in the attempt and the unit owes no earlier answer,
// that was its answer to this request, broken: the device has finished
// talking. (Further in, the codec's resynchronisation looks at every byte
// of someone else's frame as a possible start.) A frame whose CRC fails
// or was never checked may have any byte wrong, its address too: while
// another unit may still be talking, it may be that unit's late answer,
// and this unit's own answer may still come.
func frameEnded(err error, buf []byte, unit byte, alone bool) bool {
	switch {
	case errors.Is(err, ErrMismatch):
		return true
	case !alone:
		return false
	case errors.Is(err, ErrBadCRC):
		return true
	case errors.Is(err, ErrShortFrame), errors.Is(err, ErrUnexpected), errors.Is(err, ErrBadLength):
		return len(buf) >= 2 && buf[0] == unit
	}
	return false
}

// readEcho reads back the frame just sent from an adapter that echoes.
func (b *Bus) readEcho(adu []byte, deadline time.Time) error {
	for len(b.buf) < len(adu) {
		wait := time.Until(deadline)
		if wait <= 0 {
			return fmt.Errorf("rtu: echo of the request missing: %w", ErrNoAnswer)
		}
		b.port.SetReadTimeout(wait)
		n, err := b.port.Read(b.rx[:])
		if err != nil {
			return ioError{fmt.Errorf("read: %w", err)}
		}
		if n > 0 && len(b.buf) == 0 {
			b.rxStart = time.Now()
		}
		b.buf = append(b.buf, b.rx[:n]...)
	}
	if b.cfg.Capture != nil {
		b.cfg.Capture.Received(b.rxStart, time.Now(), b.buf[:len(adu)])
	}
	if string(b.buf[:len(adu)]) != string(adu) {
		return fmt.Errorf("rtu: echo differs from the request (%x): %w", b.buf[:len(adu)], ErrUnexpected)
	}
	b.buf = b.buf[:copy(b.buf, b.buf[len(adu):])]
	if len(b.buf) > 0 {
		b.rxStart = time.Now()
	}
	return nil
}

// noise sets aside bytes that are not the answer.
func (b *Bus) noise(r *Request, p []byte, why error) {
	if b.cfg.Capture != nil {
		b.noiseRec = append(b.noiseRec, p...)
	}
	b.stats.noiseBytes.Add(uint64(len(p)))
	if b.why == nil {
		b.why = why
	}
	if len(b.dropped)+len(p) <= cap(b.dropped) {
		b.dropped = append(b.dropped, p...)
	}
}

// recordNoise puts the bytes discarded since the last record into the
// capture as one record, so the capture keeps the line's order.
func (b *Bus) recordNoise() {
	if len(b.noiseRec) > 0 {
		b.cfg.Capture.Received(b.rxStart, b.lastIO, b.noiseRec)
		b.noiseRec = b.noiseRec[:0]
	}
}

// reportDropped counts and logs what an attempt discarded: one line with
// the bytes in hex and the first reason.
func (b *Bus) reportDropped(r *Request, err error) {
	switch {
	case errors.Is(b.why, ErrBadCRC):
		b.stats.crcErrors.Add(1)
	case errors.Is(b.why, ErrUnexpected), errors.Is(b.why, ErrMismatch), errors.Is(b.why, ErrBadLength):
		b.stats.unexpected.Add(1)
	case errors.Is(b.why, ErrShortFrame):
		b.stats.shortFrame.Add(1)
	}
	result := "answer found"
	if err != nil {
		result = err.Error()
	}
	b.cfg.Log.Warn("discarded bytes on the line", "line", b.cfg.Name, "trace", r.Trace, "unit", r.Unit, "fc", r.PDU[0],
		"why", b.why.Error(), "bytes", len(b.dropped), "hex", hex.EncodeToString(b.dropped), "attempt", r.Attempts, "result", result)
}
