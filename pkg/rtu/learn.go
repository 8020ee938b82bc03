package rtu

import (
	"time"

	"github.com/mcpgw/mcpgw/pkg/pdu"
)

// What the line learns of each unit from its answers: how soon it
// starts, how long it takes, how late it has ever been.

// unit is what the line has learnt of one unit, for the guard between
// transactions (see settle) and the timing of its attempts.
type unit struct {
	// Its normal response time (answers to a first attempt, from the end
	// of the request to the answer's last byte) and its slowest answer
	// (from the transaction's first frame), each a maximum that decays
	// with every new answer.
	respTime, slowest time.Duration
	respN             uint8         // samples in respTime, up to trustAfter
	turnaround        time.Duration // see learnStart
	trickles          bool          // its last answer measured came in pieces
	noLook            uint8         // attempts left that wait for the first byte (see startDue)
	lookMissed        uint8         // first looks in a row that came before the answer began
	latest            time.Duration // the latest any answer came after it could start on its frame: never forgotten
	owed              owedAnswers   // answers of earlier attempts that may still come
	silent            bool          // its last transaction heard nothing at all: one attempt until it answers
}

// learnStart learns from an answer to a first attempt sent at sent, at
// the unit's normal pace, when the unit's answers begin (its turnaround:
// from the end of the request to the answer's first byte; a sooner start
// is taken at once, a later one moves it a sixteenth of the way) and
// whether they trickle in.
func (b *Bus) learnStart(r *Request, sent time.Time) {
	u := r.Unit
	d := b.rxStart.Sub(sent) - time.Duration(len(r.adu))*b.cfg.CharTime
	if b.units[u].respN <= 1 || d < b.units[u].turnaround {
		b.units[u].turnaround = d
	} else {
		b.units[u].turnaround += (d - b.units[u].turnaround) / 16
	}
	b.units[u].trickles = b.pieces > 1
}

// brokenPromptly reports whether the last attempt, sent at sent, ended on
// a broken answer that came at the unit's normal pace. That answer was
// the last attempt's, and a device answers in order, so what the earlier
// attempts did not hear will not come: nothing is owed, and the guard
// against a collision is the unit's prompt time, not its slowest answer.
// (Were it instead an earlier attempt's answer, late, the last attempt's
// own answer would follow as promptly as a device answers what it
// received while busy, within that guard, and be drained by it.) This is
// rule 3 of the package comment for a transaction that failed.
func (b *Bus) brokenPromptly(u byte, sent time.Time, timeout time.Duration) bool {
	return b.finished && b.units[u].respN >= trustAfter && b.finishedAt.Sub(sent) <= b.prompt(u, timeout)
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
	b.units[u].silent = false
	b.units[u].slowest = decayMax(b.units[u].slowest, b.lastIO.Sub(first))
	b.units[u].latest = max(b.units[u].latest, b.lastIO.Sub(first))
	// The answer is to one of r's frames, the last ones the unit got: all
	// it owed before has come or never will.
	b.units[u].owed.n = 0
	if r.Attempts == 1 {
		// An answer slower than half the timeout is not the unit's normal
		// pace, whatever held it up.
		if d := b.lastIO.Sub(sent); clean && d <= timeout/2 {
			b.units[u].respTime = decayMax(b.units[u].respTime, d)
			b.units[u].respN = min(b.units[u].respN+1, trustAfter)
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
	if unheard == 0 || b.units[u].respN >= trustAfter && b.lastIO.Sub(sent) <= b.prompt(u, timeout) {
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

// decayMax is a maximum that forgets: each new sample lowers the old
// maximum by a sixteenth before comparing.
func decayMax(old, sample time.Duration) time.Duration {
	return max(sample, old-old/16)
}

// lateness is how long after it starts on a frame unit u may still
// answer it: the latest it has ever answered (counted from when it could
// start on the frame), at least twice the timeout, at most four times.
func (b *Bus) lateness(u byte, timeout time.Duration) time.Duration {
	return min(max(b.units[u].latest, 2*timeout), 4*timeout)
}

// trustAfter is how many answers to first attempts the line measures
// before it trusts a unit's response time.
const trustAfter = 4

// prompt is how soon after a request unit u answers when nothing is
// wrong: twice its measured response time plus t3.5, at least twice t3.5,
// at most half the timeout; the timeout until the line has measured
// enough of its answers.
func (b *Bus) prompt(u byte, timeout time.Duration) time.Duration {
	if b.units[u].respN < trustAfter {
		return timeout
	}
	return min(max(2*b.units[u].respTime+b.cfg.FrameGap, 2*b.cfg.FrameGap), timeout/2)
}
