package rtu

import (
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/mcpgw/mcpgw/pkg/ops/capture"
	"github.com/mcpgw/mcpgw/pkg/pdu"
)

// One attempt of a transaction on the wire: the request out, and its
// answer read in as few wakeups as the line's pace allows.

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
	b.cfg.Capture.Record(capture.TX, start, start, r.adu)
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
					b.cfg.Capture.Record(capture.RX, b.rxStart, b.lastIO, frame)
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
			if len(b.dropped) == 0 && b.owed[r.Unit].n == 0 {
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
			lastErr = err
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
			// Over, once the line has been silent for t3.5.
			idle := now.Sub(b.lastIO)
			if idle >= b.cfg.FrameGap {
				return start, lastErr
			}
			wait = b.cfg.FrameGap - idle
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

// startDue returns when the first byte of r's answer is expected, in the
// attempt sent at start, for a first look at the answer (firstLook);
// zero if the attempt should wait for the first byte instead. If the
// unit's answers trickle in (a real line's pace) and the line has
// measured when they begin, the look is at about their third byte: by
// then the answer's length is known (a function code and a byte count)
// and an exception, five bytes, is not yet complete. The attempt then
// wakes once for the first bytes and once for the rest, where waiting
// for the first byte wakes it three times (that byte, then enough to
// know the length, then the rest). Until the look the read sleeps with
// the line out of the poller; if nothing has come by then, it waits for
// the first byte as usual, and so does the unit's next attempt (a
// retry's or the next transaction's), or the next 2, 4 and so on up to
// 64 while its looks keep coming too soon:
// a unit off its usual pace now and then (a simulated line's jitter, a
// busy device) is looked at again soon, and one with no usual pace
// seldom costs a look in vain. A unit that answers sooner than ever
// before is read that much later than it could be, once.
func (b *Bus) startDue(r *Request, start time.Time) time.Time {
	u := r.Unit
	if b.minReader == nil || b.cfg.Echo || !b.trickles[u] || b.respN[u] < trustAfter || b.owed[u].n > 0 {
		return time.Time{}
	}
	if b.noLook[u] > 0 {
		b.noLook[u]--
		return time.Time{}
	}
	return start.Add(time.Duration(len(r.adu))*b.cfg.CharTime + b.turnaround[u])
}

// firstLook is when to look first at an answer whose first byte is
// expected at first: firstLookChars character times later, the middle of
// the span between its third byte (its length known) and its fifth (a
// whole exception).
func (b *Bus) firstLook(first time.Time) time.Time {
	return first.Add(firstLookChars * b.cfg.CharTime)
}

const firstLookChars = 3

// maxLookMissed bounds a unit's looks missed in a row as counted: it
// waits for the first byte for at most 1<<(maxLookMissed-1) attempts
// after a miss (see startDue).
const maxLookMissed = 7

// firstLooked returns when the first of the n bytes read at the first
// look (at look, for an answer expected to begin at usual) arrived: the
// answer's rest is due from then. The last of them came at most a
// character time before the read, each one a character time after the
// one before, so the first came within a span of one character time;
// where the unit's usual start lies in that span, it is taken. If they
// all came after the look, the read waited for them as usual (see
// startDue).
func (b *Bus) firstLooked(u byte, n int, look, usual, start time.Time) time.Time {
	ch := b.cfg.CharTime
	earliest, latest := b.lastIO.Add(-time.Duration(n)*ch), b.lastIO.Add(-time.Duration(n-1)*ch)
	if earliest.After(look) {
		b.lookMissed[u] = min(b.lookMissed[u]+1, maxLookMissed)
		b.noLook[u] = 1 << (b.lookMissed[u] - 1)
		return b.lastIO
	}
	b.lookMissed[u] = 0
	return maxTime(start, maxTime(earliest, minTime(usual, latest)))
}

// learnStart learns from an answer to a first attempt sent at sent, at
// the unit's normal pace, when the unit's answers begin (its turnaround:
// from the end of the request to the answer's first byte; a sooner start
// is taken at once, a later one moves it a sixteenth of the way) and
// whether they trickle in.
func (b *Bus) learnStart(r *Request, sent time.Time) {
	u := r.Unit
	d := b.rxStart.Sub(sent) - time.Duration(len(r.adu))*b.cfg.CharTime
	if b.respN[u] <= 1 || d < b.turnaround[u] {
		b.turnaround[u] = d
	} else {
		b.turnaround[u] += (d - b.turnaround[u]) / 16
	}
	b.trickles[u] = b.pieces > 1
}

// readMin makes the port's reads wait for n bytes, due by due (zero:
// unknown), where it can; every read outside an answer's rest waits for
// one.
func (b *Bus) readMin(n int, due time.Time) error {
	if b.minReader == nil {
		return nil
	}
	if err := b.minReader.SetReadMin(n, due); err != nil {
		return ioError{fmt.Errorf("set read minimum: %w", err)}
	}
	return nil
}

// ownAnswer reports whether a broken answer from unit u that ends now, in
// the attempt sent at start, was that attempt's: if an earlier attempt
// heard nothing, it may be that one's answer, late, with this one's still
// to come, unless it came at the unit's normal pace. The attempt then
// listens on until its timeout.
func (b *Bus) ownAnswer(u byte, start time.Time, timeout time.Duration) bool {
	return !b.unheard || b.respN[u] >= trustAfter && b.lastIO.Sub(start) <= b.prompt(u, timeout)
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

// awaitRest sleeps while the rest of a frame of known length is still on
// the wire: a line trickles bytes in at one a character time, and waking
// for each costs the CPU of a small edge box for nothing. It wakes one
// character (and a little) before the last byte is due, so the answer is
// handed on no later. Where the whole frame came at once (a pty, an
// adapter's burst) there is nothing to wait for.
func (b *Bus) awaitRest(deadline time.Time) {
	total, err := b.lenFn(b.buf)
	if err != nil || total <= len(b.buf)+1 {
		return
	}
	// Aim early by the runtime's timer granularity (a millisecond when the
	// process is idle): a parked goroutine costs nothing while it waits,
	// where a thread held in a long syscall makes the scheduler hand its
	// P around.
	d := time.Duration(total-len(b.buf)-1)*b.cfg.CharTime - 1200*time.Microsecond
	d = min(d, time.Until(deadline))
	if d < 500*time.Microsecond {
		return
	}
	time.Sleep(d)
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
	b.cfg.Capture.Record(capture.RX, b.rxStart, time.Now(), b.buf[:len(adu)])
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
		b.cfg.Capture.Record(capture.RX, b.rxStart, b.lastIO, b.noiseRec)
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
