package rtu

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mcpgw/mcpgw/pkg/ops/capture"
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
	OK         Outcome = iota // an answer arrived (normal or the device's exception)
	Sent                      // a broadcast went out; no answer is expected
	Timeout                   // no valid answer after every attempt
	LineDown                  // the port is closed or failed
	QueueFull                 // the line's queue is full
	Expired                   // waited in the queue longer than QueueTimeout
	Skipped                   // Skip said, when its turn came, that it need not go out
	OverBudget                // Unknown, and the line's silence budget had no room for it: not sent
)

var outcomeNames = [...]string{"ok", "broadcast", "timeout", "line down", "queue full", "expired", "skipped", "over budget"}

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
	// Skip, if set, is asked when the request's turn on the line comes,
	// once the line is quiet for it: true ends it there, Skipped, without
	// a frame. What decided it should go out may have changed while it
	// waited (its unit went offline, see package offline).
	Skip func() bool
	// Flow is the client the request comes from (a connection): the
	// line's time is shared fairly between flows (see queue).
	Flow uint64
	// Unknown marks a request to a unit not known to answer: the first
	// to a unit that has never answered, or a probe of an offline one.
	// It gets one attempt, and the time it may lose to silence is taken
	// from the line's silence budget (see silence): without room it is
	// not sent (OverBudget).
	Unknown bool
	// Probe marks an Unknown request that probes an offline unit (not
	// the first request to a unit never heard).
	Probe bool

	// Results.
	Resp     []byte  // the answer's PDU when Outcome is OK; owned by the Request
	Outcome  Outcome // how it ended
	Err      error   // for Timeout: the last attempt's failure (ErrNoAnswer, ErrBadCRC, ...)
	Attempts int     // frames sent

	enqueued time.Time
	done     chan struct{}
	adu      []byte
	tag      int64 // fair queuing: its flow's finish tag when it was queued
	budgeted bool  // it took the silence budget (see silence)
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
	CharTime       time.Duration        // one character on the wire: default Char19200
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
	ProbeShare     float64              // the silence budget: of the line's time in any minute (see silence); 0: silence only while no one else uses the line
	Capture        *capture.Recorder    // records every byte sent and received; nil: none
	Log            *slog.Logger
	// Replaces is the bus this one takes over from on the same port, when
	// a reload changes the line: Run opens the port only once Replaces has
	// closed it (see Retire), requests wait in the queue meanwhile, and
	// the line's counters carry on from Replaces's.
	Replaces *Bus
}

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
	sends       []time.Time // in the transaction in flight: when each attempt went out
	guardOther  bool        // settle's guard was against another unit's answers
	unheard     bool        // an earlier attempt of the transaction in flight heard nothing
	// The last attempt ended at its hard stop, while bytes still came: the
	// next byte may be in the middle of a frame, where broken frames are
	// not counted as answers (see countAnswers).
	babbled bool
	tail    []byte    // bytes that came right after the last answer taken
	scan    []byte    // in settle: tail, then the bytes drained; owed answers are counted in it
	settled time.Time // when the transaction in flight had the line to itself (settle returned)
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
		cfg.CharTime = Char19200
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
	b := &Bus{cfg: cfg, queue: newQueue(cfg.QueueSize, cfg.Aging, cfg.ProbeShare), buf: make([]byte, 0, 2*MaxADU),
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

// SetProbeShare changes the silence budget's share of the line's time
// (a reload).
func (b *Bus) SetProbeShare(share float64) {
	b.queue.mu.Lock()
	b.queue.silence.share = share
	b.queue.mu.Unlock()
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
		timeout := r.Timeout
		if timeout <= 0 {
			timeout = b.cfg.Timeout
		}
		// What an Unknown request's silence may cost: its attempt, and
		// at most as long again of guard after it.
		switch b.queue.push(r, r.enqueued, 2*timeout) {
		case queued:
			return true
		case full:
			r.Outcome = QueueFull
			return false
		case refused:
			r.Outcome = OverBudget
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
	idle := time.NewTimer(idleCheck)
	defer idle.Stop()
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
		case <-idle.C:
			// Nothing to do: is the port still there? A serial adapter
			// unplugged, or a pseudo-terminal whose other end closed,
			// would otherwise go unnoticed until the next request.
			if err := b.checkPort(); err != nil {
				b.closePort(err)
				downFrom = time.Now()
				b.stats.lineDowns.Add(1)
			}
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
				// What it cost the line: from its first frame to its
				// last byte (no clock read on the way), and the guard it
				// leaves after it.
				var cost, guard time.Duration
				end := b.lastIO
				if r.Attempts > 0 {
					guard = b.guardAfter(r)
					cost = max(end.Sub(b.settled), 0) + guard
				}
				b.queue.done(r, cost, b.settled, end, guard)
				r.done <- struct{}{}
				if b.port == nil {
					downFrom = time.Now()
					b.stats.lineDowns.Add(1)
				}
			}
		}
		idle.Reset(idleCheck)
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
		now := time.Now()
		b.queue.done(r, 0, now, now, 0)
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

// idleCheck is how often an idle line looks whether its port is still
// there.
const idleCheck = 500 * time.Millisecond

// Checker is a Port that can tell, without reading, that it is gone: a
// hang-up, or an error on the device.
type Checker interface {
	Check() error
}

// checkPort reports an error if the port is gone: its device node
// removed (Config.Path), or, for a Checker, hung up.
func (b *Bus) checkPort() error {
	if b.port == nil {
		return nil
	}
	if b.cfg.Path != "" && missing(b.cfg.Path) {
		return ioError{fmt.Errorf("%s: the device is gone", b.cfg.Path)}
	}
	if c, ok := b.port.(Checker); ok {
		if err := c.Check(); err != nil {
			return ioError{err}
		}
	}
	return nil
}

func missing(path string) bool {
	_, err := os.Stat(path)
	return errors.Is(err, os.ErrNotExist)
}

// failQueued answers every queued request with LineDown.
func (b *Bus) failQueued() {
	for r := b.queue.pop(time.Now()); r != nil; r = b.queue.pop(time.Now()) {
		r.Outcome = LineDown
		now := time.Now()
		b.queue.done(r, 0, now, now, 0)
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
