package rtu

import (
	"fmt"
	"time"
)

// The line's timing: the silences the spec asks for, when an answer
// can start, and reading it in as few wakeups as the line's pace allows.

// Char19200 is one character of 11 bits (8E1) at 19200 baud: the
// character time below which the spec fixes t1.5 and t3.5.
const Char19200 = 11 * time.Second / 19200

// FrameGap returns t3.5 for a character time: 3.5 characters, fixed at
// 1750 µs when the character time is shorter than at 19200 baud.
func FrameGap(char time.Duration) time.Duration {
	if char < Char19200 {
		return 1750 * time.Microsecond
	}
	return char * 7 / 2
}

// CharGap returns the default silence inside a frame that makes it
// incomplete: t1.5 for a character time (750 µs above 19200 baud), but at
// least 10 ms. Pseudo-terminals, USB adapters and busy machines deliver
// bytes with gaps of a few milliseconds that were never on the wire;
// treating those as the end of a frame throws good answers away, while a
// frame that really stops short still fails its length and CRC check.
func CharGap(char time.Duration) time.Duration {
	t := char * 3 / 2
	if char < Char19200 {
		t = 750 * time.Microsecond
	}
	return max(t, MinCharGap)
}

// MinCharGap is the least default CharGap.
const MinCharGap = 10 * time.Millisecond

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
	if b.minReader == nil || b.cfg.Echo || !b.units[u].trickles || b.units[u].respN < trustAfter || b.units[u].owed.n > 0 {
		return time.Time{}
	}
	if b.units[u].noLook > 0 {
		b.units[u].noLook--
		return time.Time{}
	}
	return start.Add(time.Duration(len(r.adu))*b.cfg.CharTime + b.units[u].turnaround)
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
		b.units[u].lookMissed = min(b.units[u].lookMissed+1, maxLookMissed)
		b.units[u].noLook = 1 << (b.units[u].lookMissed - 1)
		return b.lastIO
	}
	b.units[u].lookMissed = 0
	return maxTime(start, maxTime(earliest, minTime(usual, latest)))
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
