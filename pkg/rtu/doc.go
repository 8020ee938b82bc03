// Package rtu implements Modbus RTU: the frame codec (pure functions over
// bytes) and the Bus, the single goroutine that owns a serial line, with
// its queue, its timing and the rules by which it recovers.
//
// The files follow the ideas: codec.go (frames), request.go (a request
// on the line and its outcome), bus.go (the owner of the port), queue.go
// (who goes next: priorities and fair shares of the line's time),
// silence.go (the budget for units not known to answer), timing.go (the
// spec's silences, when an answer can start, reading it in), transaction.go
// (a transaction's attempts), guard.go (what a transaction leaves the
// next to respect), learn.go (what the line learns of each unit) and
// slave.go (the slave's side of the codec).
//
// # How the line recovers
//
// An RTU answer carries no transaction id: the line tells answers apart
// only by unit, function, shape (a read's byte count, a write's echo) and
// time. Two requests are confusable when an answer to one would pass for
// an answer to the other: same unit, same function, and the same quantity
// read or the same echo. The rules, each proved by a simulation (see below)
// and tested through the whole gateway:
//
//  1. Until the next frame goes out, the line belongs to the request in
//     flight. Every attempt sends the same bytes, so a frame that fits
//     the request is its answer, whether it comes during an attempt or
//     in the t3.5 of silence after an attempt's timeout, before the
//     retry.
//  2. A broken answer ends the attempt early. A complete frame from the
//     unit that does not fit, or one that fails its CRC while the unit
//     is alone (it owes no earlier answer, no other unit owes one, and
//     the last transaction's guard is not against another unit), heard
//     first in the attempt, means the device has finished talking: the
//     retry (or 0x0B) follows after t3.5 of silence, not after the
//     timeout. A frame whose CRC fails may have any byte wrong, the
//     address too: while another unit may be talking, it may be that
//     unit's late answer, and the attempt listens on. If an earlier
//     attempt of the same request heard nothing, the broken frame may be
//     that attempt's answer, late, with this attempt's still to come: it
//     ends the attempt only if it came at the unit's normal pace, and
//     otherwise the attempt listens on to its timeout. An attempt that
//     heard nothing ends at its timeout, and the retry follows after
//     t3.5.
//  3. The line remembers, per unit, the answers it may still be owed:
//     those of attempts that heard nothing. After a retry, an answer
//     that came within the unit's normal response time of the last
//     attempt is taken as that attempt's (nothing owed); a slower one,
//     or any before the line has measured the unit's response time, as
//     an earlier attempt's, and the later attempt's answer is owed. The
//     unit's normal response time is measured on answers to first
//     attempts when it owed nothing (twice its recent maximum plus t3.5,
//     at most half the timeout, trusted after 4 answers). The same holds
//     for a transaction that failed: if its last attempt got a broken
//     answer at the unit's normal pace, that answer was the last
//     attempt's, and nothing the earlier attempts missed is owed. A
//     device answers each frame at most once: while the unit is alone
//     (rule 2), a broken answer that an attempt heard first was its
//     answer too, and after the answer is taken only frames it has not
//     answered yet are owed.
//  4. A request waits for owed answers only if it is confusable with
//     them: until they have all arrived (and been drained), or until
//     none can come any more. A device answers one frame after the
//     other, each within its lateness (the latest the unit has ever
//     answered, at least twice the timeout, at most four times) of when
//     it got to it: when the frame was sent, or when the device finished
//     the one before. So the wait ends a lateness after the device was
//     free to start on the first frame that may still be answered (the
//     first attempt that heard nothing, whose earlier attempts it had
//     answered, broken; or, after a late answer was taken, the end of
//     that answer), plus a lateness for each later frame. An owed answer
//     is the earliest frame's whose answer could still end when it did:
//     one that ends more than a sixteenth of the lateness after an
//     earlier frame's answer was due answers a later frame, and the
//     device, answering in order, will never answer the earlier one. So
//     after a transaction whose first attempt heard nothing and whose
//     retry's answer came after it failed, that answer settles what the
//     unit owed (counted as the first attempt's, it would hold the line
//     another lateness for an answer that will not come). The lateness
//     is measured from when the device was free to start on the frame it
//     answered, so that a device late twice in a row does not count as
//     late by both. An owed answer with a bad CRC counts as arrived only
//     while the unit is alone (rule 2) and the frame has the answer's
//     exact shape (address, function, byte count or echo, length) at a
//     frame boundary: any of its bytes may be wrong, the unit's address
//     too, so with another unit that may be talking it could be that
//     unit's answer. A request that is not confusable goes at once: if
//     an owed answer arrives during it, it does not fit and is dropped.
//     A device answers in order, so any answer to a later frame settles
//     what a unit owed. While a request waits for owed answers it does
//     not hold the line: it keeps its place at the head of the queue,
//     and requests that need not wait go first (so a dead unit's client
//     waits for its own unit's answers, not the other units' clients).
//  5. Against collisions on the wire, after a transaction that needed a
//     retry with an unanswered attempt, or failed, the next frame waits
//     until the line has been quiet for the unit's normal response time
//     (after a failed one, for its slowest recent answer, unless it
//     ended on a prompt broken answer as in rule 3, or the answers it
//     owed have all come: then for its normal response time after them;
//     for a unit whose pace is not known yet, the timeout: libmodbus
//     slaves ignore the first frame after another unit's request for
//     their own 500 ms timeout). Never longer than the timeout.
//
// What this costs: a broken answer, t3.5 and a retry; a dropped answer,
// the timeout and a retry; a late answer, its lateness. Nothing else
// waits. A unit whose last transaction heard nothing at all gets one
// attempt per transaction until it answers again: retrying a device that
// missed every attempt costs a timeout for little chance (a dead unit is
// offline after about 2.4 s of polling instead of 3 s, with 300 ms
// timeouts). An owed answer that arrives while the next request waits for
// it counts as the unit answering again.
//
// # The limits
//
// The rules assume a device answers one request at a time, in
// order, within its lateness (twice the timeout, or the latest it has
// shown), and that an answer that comes late (the device was busy) is
// followed by prompt answers to what it received meanwhile. A device late
// for the first time by more than twice its timeout can hand that answer
// to a confusable request; from then on the line knows its lateness. Two
// cases remain that no RTU master can tell apart: a late answer to a first
// attempt that lands within the unit's normal response time after the
// retry is taken as the retry's, and if the retry's own answer then comes
// late too, beyond the guard, a following confusable request could take
// it; and a device that pauses for longer than t3.5 inside an answer
// (which the spec forbids), or repeats an answer unasked after such a
// pause, can hand what follows the pause to whatever confusable request is
// next: the line has fallen silent, so the next frame goes out, and a tail
// of the answer that starts with the unit's address looks like a broken
// answer to it. A device that is late again on a request it received while
// it was busy being late is outside the contract too: in the simulation,
// with such devices late on 30 % of requests by 1.5 timeouts, three
// million transactions handed one to three answers to the wrong request,
// with these rules and with the ones before them. A unit that is regularly
// slower than its timeout should be given a longer timeout
// ([[bus.device]]).
//
// # The proof
//
// The package's simulation (simulate_test.go) runs the bus in virtual time
// (testing/synctest) against a simulated multi-drop line: three devices
// and a dead unit, answers dropped, corrupted, garbled by noise, repeated,
// echoed by the adapter, and late by random delays around the timeout,
// eight concurrent clients, every request unique so that a misplaced
// answer shows. Answers come at the line's pace in bursts of up to 16
// bytes, as a UART's FIFO hands them on, and every scenario runs twice:
// with reads that wait for one byte (go.bug.st/serial's) and with reads
// that wait for the rest of a frame (Linux's, pkg/wire/serialport). It asserts
// that no request ever gets an answer that is not its own, and that the
// line's counters agree with the clients'; with -sim.dump it prints the
// line's traffic and log around a wrong answer. make test runs 75,000
// transactions; make simulate three runs of 3.75 million, each with a new
// seed, printed so that a run can be replayed (go test -run TestSimulate
// ./pkg/rtu -sim.seed N; with concurrent clients the interleaving can
// differ, the faults do not). Breaking rule 4 or 5 makes it fail within
// seconds. Rule 3 matters for devices whose answers to buffered frames can
// be late too, which the simulation's contract leaves out; breaking it
// makes the gateway's fault tests (with pkg/tools/sim's devices, late
// independently of being busy) give wrong answers at once.
package rtu
