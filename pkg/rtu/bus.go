package rtu

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mcpgw/mcpgw/pkg/capture"
	"github.com/mcpgw/mcpgw/pkg/pdu"
	"github.com/mcpgw/mcpgw/pkg/trace"
)

// Port is what the bus needs of a serial port. A Read that times out
// returns 0, nil, and a zero read timeout means "what is there now,
// without waiting" (go.bug.st/serial's behaviour): the bus keeps its own
// deadlines and never treats that as end of input.
type Port interface {
	io.ReadWriter
	SetReadTimeout(t time.Duration) error
	ResetInputBuffer() error
	Close() error
}

// MinReader is a Port whose reads can wait for several bytes at once:
// after SetReadMin(n, due), a Read waits until n bytes are waiting or its
// timeout passes, and then returns what is there, fewer or none if that
// is all. A line trickles a frame in one character time per byte; waking
// once for the rest of a frame of known length, instead of once per
// byte, is most of what a slow line costs the CPU. due, if not zero, is
// when the n bytes are due at the line's pace: the read need not look at
// the line before then.
type MinReader interface {
	SetReadMin(n int, due time.Time) error
}

// Outcome is how a transaction ended.
type Outcome uint8

const (
	OK        Outcome = iota // an answer arrived (normal or the device's exception)
	Sent                     // a broadcast went out; no answer is expected
	Timeout                  // no valid answer after every attempt
	LineDown                 // the port is closed or failed
	QueueFull                // the line's queue is full
	Expired                  // waited in the queue longer than QueueTimeout
)

var outcomeNames = [...]string{"ok", "broadcast", "timeout", "line down", "queue full", "expired"}

func (o Outcome) String() string { return outcomeNames[o] }

// Request is one transaction for the bus. The caller fills the request
// fields, calls Bus.Do, and reads the result fields after it returns. A
// Request may be reused for the next transaction once Do has returned.
type Request struct {
	Unit    byte
	PDU     []byte        // the request PDU: function code and data
	Timeout time.Duration // per attempt; 0 means the bus's default
	Retries int           // further attempts after the first; <0 means the bus's default
	// Priority puts the request in the line's priority class (writes,
	// operators' clients), served before plain reads.
	Priority bool
	// Background puts it after every other request (the gateway's own
	// polls, agent mode); Priority wins over it.
	Background bool
	// Trace is the transaction's id in the logs; the line's log lines
	// about it carry it.
	Trace trace.ID

	// Results.
	Resp     []byte  // the answer's PDU when Outcome is OK; owned by the Request
	Outcome  Outcome // how it ended
	Err      error   // for Timeout: the last attempt's failure (ErrNoAnswer, ErrBadCRC, ...)
	Attempts int     // frames sent

	enqueued time.Time
	done     chan struct{}
	adu      []byte
}

// ErrNoAnswer means an attempt heard nothing valid before its timeout.
var ErrNoAnswer = errors.New("rtu: no answer")

// errTrailing marks bytes after a good answer.
var errTrailing = errors.New("rtu: bytes after the answer")

// ErrMismatch means a frame from the right unit and function answered a
// different request (its byte count or echo does not fit).
var ErrMismatch = errors.New("rtu: answer does not fit the request")

// Config is one serial line's behaviour. Zero values take the defaults
// noted on each field.
type Config struct {
	Name           string
	Open           func() (Port, error) // opens (and reopens) the port
	Path           string               // the port's device node, watched while it is missing; optional
	CharTime       time.Duration        // one character on the wire; see CharTime
	FrameGap       time.Duration        // silence between frames, and the end of a frame of unpredictable length: default t3.5 from CharTime
	CharGap        time.Duration        // silence inside a frame that makes it incomplete: default CharGap(CharTime)
	Burst          time.Duration        // the port delivers bytes in bursts up to this far apart (a USB adapter's latency timer): default gaps are raised to Burst + 2 ms
	Timeout        time.Duration        // per attempt: default 500ms
	Retries        int                  // further attempts after the first
	BroadcastDelay time.Duration        // turnaround after a broadcast: default 100ms
	Echo           bool                 // the adapter echoes what is sent: read it back first
	QueueSize      int                  // pending transactions: default 4096
	QueueTimeout   time.Duration        // longest wait in the queue: default none
	Aging          time.Duration        // a plain request that waited this long goes before priority ones: default QueueTimeout/2, or 1s without one
	Capture        *capture.Recorder    // records every byte sent and received; nil: none
	Log            *slog.Logger
	// Replaces is the bus this one takes over from on the same port, when
	// a reload changes the line: Run opens the port only once Replaces has
	// closed it (see Retire), requests wait in the queue meanwhile, and
	// the line's counters carry on from Replaces's.
	Replaces *Bus
}

// CharTime returns the time one character of bits bits takes at baud.
func CharTime(baud, bits int) time.Duration {
	return time.Duration(bits) * time.Second / time.Duration(baud)
}

// FrameGap returns t3.5 for a character time: 3.5 characters, fixed at
// 1750 µs when the character time is shorter than at 19200 baud.
func FrameGap(char time.Duration) time.Duration {
	if char < CharTime(19200, 11) {
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
	if char < CharTime(19200, 11) {
		t = 750 * time.Microsecond
	}
	return max(t, MinCharGap)
}

// MinCharGap is the least default CharGap.
const MinCharGap = 10 * time.Millisecond

// Bus owns one serial line. Its Run goroutine is the only code that
// touches the port; everyone else hands it Requests through Do.
type Bus struct {
	cfg     Config
	queue   *queue       // senders: Do; receiver: Run
	up      atomic.Bool  // the port is open
	opening atomic.Bool  // Run has not tried the port yet (or waits for the bus it replaces): queue requests meanwhile
	since   atomic.Int64 // when up last changed, unix ns
	stats   *counters    // shared with the bus this one replaces
	// Retiring (see Retire).
	retire     chan struct{} // closed by Retire
	retireOnce sync.Once
	successor  atomic.Pointer[Bus] // takes the requests once the queue is closed
	closed     chan struct{}       // closed when Run returns: the port is free

	// Owned by Run.
	port        Port
	buf         []byte
	rx          [MaxADU]byte
	lastIO      time.Time // last byte written or read
	quietTill   time.Time // no transmission before this (broadcast turnaround)
	expect      Expect
	lenFn       LenFunc
	minReader   MinReader // b.port, if its reads can wait for several bytes
	dropped     []byte    // bytes discarded in the current attempt, for the log
	strays      int       // drains of stray bytes since the last one logged
	strayLogged time.Time
	why         error     // the first reason they were discarded
	rxStart     time.Time // when the first byte now in buf arrived
	noiseRec    []byte    // discarded bytes not yet recorded in the capture
	// What the line knows of each unit, for the guard between
	// transactions (see settle): its normal response time (answers to a
	// first attempt, from the end of the request to the answer's last
	// byte) and its slowest answer (from the transaction's first frame),
	// each a maximum that decays with every new answer.
	respTime, slowest [256]time.Duration
	respN             [256]uint8         // samples in respTime, up to trustAfter
	turnaround        [256]time.Duration // see learnStart
	trickles          [256]bool          // the unit's last answer measured came in pieces
	noLook            [256]uint8         // attempts left that wait for the first byte (see startDue)
	lookMissed        [256]uint8         // first looks in a row that came before the answer began
	pieces            int                // reads that brought bytes in the attempt in flight
	latest            [256]time.Duration // the latest any answer of the unit came after it could start on its frame: never forgotten
	prev              prevTx
	owed              [256]owedAnswers
	silent            [256]bool // the unit's last transaction heard nothing at all: one attempt until it answers
	finished          bool      // the last attempt ended on a broken answer from the unit, not on silence
	finishedAt        time.Time // when that broken answer arrived
	// In the transaction in flight: how many broken answers from its unit
	// were the first thing an attempt heard while it was alone (see
	// othersQuiet).
	brokenHeard int
	guardOther  bool // settle's guard was against another unit's answers
	unheard     bool // an earlier attempt of the transaction in flight heard nothing
	// The last attempt ended at its hard stop, while bytes still came: the
	// next byte may be in the middle of a frame, where broken frames are
	// not counted as answers (see countAnswers).
	babbled bool
	tail    []byte // bytes that came right after the last answer taken
	scan    []byte // in settle: tail, then the bytes drained; owed answers are counted in it
}

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
	until   time.Time     // none can come after this
	from    time.Time     // when the device was free to start on the first of those frames
	timeout time.Duration // the unit's timeout for them
	any     bool          // they answer more than one request: every request to the unit is confusable
	pdu     [pdu.MaxSize]byte
	pn      int
}

// confusable reports whether an owed answer could pass for r's answer.
func (o *owedAnswers) confusable(r *Request) bool {
	return o.any || Confusable(o.pdu[:o.pn], r.PDU)
}

// Stats are a line's counters, after the FC 08 diagnostics counters.
type Stats struct {
	Requests   uint64 // transactions served (not counting retries)
	Frames     uint64 // frames sent, retries included
	Answers    uint64 // transactions answered (normal or exception)
	Exceptions uint64 // answers that were the device's exception
	Timeouts   uint64 // transactions with no valid answer after every attempt
	CRCErrors  uint64 // attempts that saw a frame with a bad CRC
	Unexpected uint64 // attempts that saw a frame from another unit, to another function, or not fitting the request
	ShortFrame uint64 // attempts that saw a frame cut short by silence
	NoiseBytes uint64 // bytes discarded while waiting for answers
	LateBytes  uint64 // bytes drained before a transmission (late answers)
	LineDowns  uint64 // times the port failed or could not be opened
}

type counters struct {
	requests, frames, answers, exceptions, timeouts, crcErrors, unexpected,
	shortFrame, noiseBytes, lateBytes, lineDowns atomic.Uint64
}

// Stats returns a snapshot of the line's counters; safe from any goroutine.
func (b *Bus) Stats() Stats {
	c := b.stats
	return Stats{c.requests.Load(), c.frames.Load(), c.answers.Load(), c.exceptions.Load(),
		c.timeouts.Load(), c.crcErrors.Load(), c.unexpected.Load(), c.shortFrame.Load(),
		c.noiseBytes.Load(), c.lateBytes.Load(), c.lineDowns.Load()}
}

// NewBus checks cfg and returns a bus; start it with Run.
func NewBus(cfg Config) *Bus {
	if cfg.CharTime <= 0 {
		cfg.CharTime = CharTime(19200, 11)
	}
	var floor time.Duration // gaps shorter than a burst's are no gaps on the wire
	if cfg.Burst > 0 {
		floor = cfg.Burst + 2*time.Millisecond
	}
	if cfg.FrameGap <= 0 {
		cfg.FrameGap = max(FrameGap(cfg.CharTime), floor)
	}
	if cfg.CharGap <= 0 {
		cfg.CharGap = max(CharGap(cfg.CharTime), floor)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 500 * time.Millisecond
	}
	if cfg.BroadcastDelay <= 0 {
		cfg.BroadcastDelay = 100 * time.Millisecond
	}
	if cfg.QueueSize <= 0 {
		cfg.QueueSize = 4096
	}
	if cfg.Aging <= 0 {
		cfg.Aging = time.Second
		if cfg.QueueTimeout > 0 {
			cfg.Aging = cfg.QueueTimeout / 2
		}
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	b := &Bus{cfg: cfg, queue: newQueue(cfg.QueueSize, cfg.Aging), buf: make([]byte, 0, 2*MaxADU),
		tail: make([]byte, 0, 2*MaxADU), scan: make([]byte, 0, 4*MaxADU),
		dropped: make([]byte, 0, 2*MaxADU), stats: &counters{},
		retire: make(chan struct{}), closed: make(chan struct{})}
	b.lenFn = b.expect.Len
	b.opening.Store(true)
	if cfg.Replaces != nil {
		b.stats = cfg.Replaces.stats
	}
	return b
}

// Retire stops the line for a reload that changes or removes it: Run
// finishes the transaction in flight, closes the port and returns.
// Requests still queued then, and any that reach this bus later, go to
// by (the bus that replaces this one, built with Config.Replaces set to
// it), or are answered LineDown when by is nil (the line was removed).
func (b *Bus) Retire(by *Bus) {
	b.retireOnce.Do(func() {
		b.successor.Store(by)
		close(b.retire)
	})
}

// Closed is closed once Run has returned and the port is free.
func (b *Bus) Closed() <-chan struct{} { return b.closed }

// Name returns the line's name.
func (b *Bus) Name() string { return b.cfg.Name }

// CharTime returns one character's time on the line, and FrameGap the
// silence it keeps between frames, as NewBus settled them.
func (b *Bus) CharTime() time.Duration { return b.cfg.CharTime }
func (b *Bus) FrameGap() time.Duration { return b.cfg.FrameGap }

// Since returns when the line last went up or down (zero before it first
// tried its port).
func (b *Bus) Since() time.Time {
	if ns := b.since.Load(); ns != 0 {
		return time.Unix(0, ns)
	}
	return time.Time{}
}

// Queued returns how many requests wait in the line's queue.
func (b *Bus) Queued() int { return b.queue.len() }

// Up reports whether the line's port is open.
func (b *Bus) Up() bool { return b.up.Load() }

// Do runs r on the line and returns when it is done. A line that is down
// or full answers at once (LineDown, QueueFull). Once queued, a
// transaction runs to its end, bounded by its timeouts and retries,
// whatever ctx does: the bus owns r until then, and the caller may reuse
// r as soon as Do returns.
func (b *Bus) Do(ctx context.Context, r *Request) {
	r.Resp, r.Err, r.Attempts = r.Resp[:0], nil, 0
	if r.done == nil {
		r.done = make(chan struct{}, 1)
	}
	r.enqueued = time.Now()
	if b.enqueue(r) {
		<-r.done
	}
}

// enqueue queues r on b, or on the bus that replaced b. It reports false,
// with r's Outcome set, when no line takes it.
func (b *Bus) enqueue(r *Request) bool {
	for {
		if !b.up.Load() && !b.opening.Load() {
			if next := b.successor.Load(); next != nil {
				b = next
				continue
			}
			r.Outcome = LineDown
			return false
		}
		switch b.queue.push(r) {
		case queued:
			return true
		case full:
			r.Outcome = QueueFull
			return false
		}
		// closed: b retired.
		next := b.successor.Load()
		if next == nil {
			r.Outcome = LineDown
			return false
		}
		b = next
	}
}

// Run serves the line until ctx ends: it opens the port (retrying while it
// cannot), runs queued transactions one at a time, and reopens the port
// after an I/O error. It closes the port before it returns.
//
// While the port's device node is missing (Config.Path), Run looks for it
// every 200 ms and opens it as soon as it is back; other open failures are
// retried with backoff from 100 ms to 3 s.
func (b *Bus) Run(ctx context.Context) {
	defer close(b.closed)
	if old := b.cfg.Replaces; old != nil {
		select { // the port is old's until it closes it
		case <-old.closed:
		case <-ctx.Done():
		case <-b.retire:
		}
	}
	backoff := 100 * time.Millisecond
	var (
		lastErr  string
		lastLog  time.Time
		downFrom time.Time
	)
	for ctx.Err() == nil && !b.retired() {
		if b.port == nil {
			p, err := b.cfg.Open()
			if err != nil {
				b.opening.Store(false) // queued requests are answered LineDown while it is down
				if downFrom.IsZero() {
					downFrom = time.Now()
					b.stats.lineDowns.Add(1)
					b.since.Store(downFrom.UnixNano())
				}
				wait := backoff
				if b.cfg.Path != "" && missing(b.cfg.Path) {
					wait = 200 * time.Millisecond
				} else {
					backoff = min(backoff*2, 3*time.Second)
				}
				if err.Error() != lastErr || time.Since(lastLog) > 30*time.Second {
					b.cfg.Log.Warn("serial line down, retrying", "line", b.cfg.Name, "err", err,
						"down_for", time.Since(downFrom).Round(time.Millisecond), "retry_in", wait)
					lastErr, lastLog = err.Error(), time.Now()
				}
				if !b.waitDown(ctx, wait) {
					break
				}
				continue
			}
			b.port, backoff, lastErr = p, 100*time.Millisecond, ""
			b.minReader, _ = p.(MinReader)
			b.port.ResetInputBuffer()
			b.lastIO = time.Now()
			b.up.Store(true)
			b.opening.Store(false) // only now: a request in between would have been answered LineDown
			b.since.Store(time.Now().UnixNano())
			if downFrom.IsZero() {
				b.cfg.Log.Info("serial line up", "line", b.cfg.Name)
			} else {
				b.cfg.Log.Info("serial line up again", "line", b.cfg.Name, "was_down_for", time.Since(downFrom).Round(time.Millisecond))
			}
			downFrom = time.Time{}
		}
		select {
		case <-ctx.Done():
		case <-b.retire:
		case <-b.queue.wake:
			for b.port != nil && !b.retired() {
				r := b.next(time.Now())
				if r == nil {
					break
				}
				if !b.serve(r) {
					b.queue.unpop(r) // deferred: it keeps its place
					continue
				}
				r.done <- struct{}{}
				if b.port == nil {
					downFrom = time.Now()
					b.stats.lineDowns.Add(1)
				}
			}
		}
	}
	b.closePort(nil)
	b.opening.Store(false)
	if b.retired() {
		b.handOver()
	}
	b.failQueued()
	if b.retired() {
		b.cfg.Log.Info("serial line closed for a reload", "line", b.cfg.Name, "replaced", b.successor.Load() != nil)
		return
	}
	st := b.Stats()
	b.cfg.Log.Info("serial line closed", "line", b.cfg.Name, "requests", st.Requests, "frames", st.Frames,
		"answers", st.Answers, "exceptions", st.Exceptions, "timeouts", st.Timeouts, "crc_errors", st.CRCErrors,
		"unexpected", st.Unexpected, "short_frames", st.ShortFrame, "noise_bytes", st.NoiseBytes, "late_bytes", st.LateBytes,
		"line_downs", st.LineDowns)
}

// next returns the next request to serve. One whose unit still owes
// answers it could be confused with must wait for them (see settle); it
// keeps its place while a request that need not wait goes first, so that
// a dead or slow unit's late answers hold up only its own requests.
func (b *Bus) next(now time.Time) *Request {
	r := b.queue.pop(now)
	if r == nil || !b.mustWait(r, now) {
		return r
	}
	if other := b.queue.popFunc(func(q *Request) bool { return !b.mustWait(q, now) }); other != nil {
		b.queue.unpop(r)
		return other
	}
	return r
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

// mustWait reports whether r's unit owes answers that could pass for r's.
func (b *Bus) mustWait(r *Request, now time.Time) bool {
	o := &b.owed[r.Unit]
	return o.n > 0 && now.Before(o.until) && o.confusable(r)
}

// retired reports whether Retire was called.
func (b *Bus) retired() bool {
	select {
	case <-b.retire:
		return true
	default:
		return false
	}
}

// handOver closes the queue of a retired bus and passes what waits to
// its successor, in order; with none, they are answered LineDown.
func (b *Bus) handOver() {
	next := b.successor.Load()
	for _, r := range b.queue.close() {
		if next == nil {
			r.Outcome = LineDown
		} else if next.enqueue(r) {
			continue
		}
		r.done <- struct{}{}
	}
}

// waitDown waits d while the line is down, answering whatever is queued
// with LineDown at once. It returns false if ctx ended or the bus
// retired.
func (b *Bus) waitDown(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-b.retire:
			return false
		case <-t.C:
			return true
		case <-b.queue.wake:
			b.failQueued()
		}
	}
}

func missing(path string) bool {
	_, err := os.Stat(path)
	return errors.Is(err, os.ErrNotExist)
}

// failQueued answers every queued request with LineDown.
func (b *Bus) failQueued() {
	for r := b.queue.pop(time.Now()); r != nil; r = b.queue.pop(time.Now()) {
		r.Outcome = LineDown
		r.done <- struct{}{}
	}
}

func (b *Bus) closePort(err error) {
	b.up.Store(false)
	b.since.Store(time.Now().UnixNano())
	if b.port != nil {
		b.port.Close()
		b.port = nil
		if err != nil {
			b.cfg.Log.Error("serial line failed, reopening", "line", b.cfg.Name, "err", err)
		}
	}
}

// ioError marks a failure of the port itself, as opposed to the protocol.
type ioError struct{ err error }

func (e ioError) Error() string { return e.err.Error() }
func (e ioError) Unwrap() error { return e.err }

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
	if b.silent[r.Unit] {
		// Its last transaction heard nothing at all, and nothing it owed
		// has come since (see settle): until it answers again, one
		// attempt. Retrying a device that missed every attempt costs the
		// line a timeout for little chance.
		retries = 0
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
	var first, sent time.Time  // when the first and the last attempt went out
	unheard := 0               // attempts that ended with nothing from the device: their answers may still come
	var firstUnheard time.Time // when the first attempt that heard nothing went out
	unheardFrom := 0           // its number (r.Attempts then)
	for range 1 + retries {
		b.unheard = unheard > 0
		sent, err = b.attempt(r, timeout)
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
				firstUnheard, unheardFrom = sent, r.Attempts
			}
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
			b.owe(r, firstUnheard, sent, timeout, unheard, r.Attempts-unheardFrom+1)
		}
	}
	return true
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
	b.owe(r, b.lastIO, sent, timeout, n, n)
}

// owe records that unit r.Unit may still send n answers to r's frames
// (the last sent at last). None can come once
// the device has had time to answer every frame that may still be
// answered, frames of them, one after the other, the first from from
// (when it was free to start on them): each takes it at most its
// lateness, and it starts on each when it has been sent and the one
// before it answered. Answers still owed for an earlier request come
// before these; they are kept: the unit then owes answers to two
// requests, and every request to it is confusable.
func (b *Bus) owe(r *Request, from, last time.Time, timeout time.Duration, n, frames int) {
	o := &b.owed[r.Unit]
	now := time.Now()
	pending := o.n > 0 && now.Before(o.until)
	if pending {
		from = maxTime(from, o.until)
	}
	late := b.lateness(r.Unit, timeout)
	until := from.Add(late)
	for range frames - 1 {
		until = maxTime(until, last).Add(late)
	}
	if pending {
		o.any = o.any || !Confusable(o.pdu[:o.pn], r.PDU)
		o.n += n
		o.until = until
		return
	}
	*o = owedAnswers{n: n, until: until, from: from, timeout: timeout}
	o.pn = copy(o.pdu[:], r.PDU)
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
	k := 0
	count := func() {
		if until.IsZero() || o.any {
			return
		}
		k = countAnswers(b.scan, r.Unit, o.pdu[:o.pn], alone)
		if k > 0 {
			b.silent[r.Unit] = false // it answers, late
		}
		if k > 0 && len(b.scan) > drained {
			// The device got to the frame it answered no earlier than
			// it was free to start on the first owed one: counted from
			// then, the sample is never less than its lateness. (From
			// the transaction's first frame, it would add the time the
			// device spent on the answers before, and one device late
			// twice in a row would set the unit's lateness to both.)
			b.latest[r.Unit] = max(b.latest[r.Unit], b.lastIO.Sub(o.from))
		}
		if k >= o.n {
			// Every answer owed has come: what remains is the guard
			// against a collision. If the last transaction's guard was
			// against this unit's answers, they are the ones that came,
			// and nothing else from it is on its way: the guard is its
			// prompt time after them, not its slowest answer.
			o.n, until = 0, time.Time{}
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
				o.n -= k // these have come
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
		if time.Since(b.lastIO) >= quiet && !time.Now().Before(until) {
			if !until.IsZero() {
				o.n = 0 // none can come any more
			}
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
	e := Expect{Unit: unit, FC: req[0]}
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
	b.expect = Expect{Unit: r.Unit, FC: r.PDU[0]}
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
