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
	Capture        Recorder             // records every byte sent and received; nil: none
	Log            *slog.Logger
	// Replaces is the bus this one takes over from on the same port, when
	// a reload changes the line: Run opens the port only once Replaces has
	// closed it (see Retire), requests wait in the queue meanwhile, and
	// the line's counters carry on from Replaces's.
	Replaces *Bus
}

// A Recorder records the line's bytes as they pass, with the times of
// their first and last byte: Sent what the gateway sent (requests),
// Received what it received (answers and noise). The line's goroutine
// calls it, so it must not wait (pkg/ops/capture's Recorder queues).
type Recorder interface {
	Sent(start, end time.Time, p []byte)
	Received(start, end time.Time, p []byte)
}

// Bus owns one serial line. Its Run goroutine is the only code that
// touches the port; everyone else hands it Requests through Do.
type Bus struct {
	cfg     Config
	queue   *queue                // senders: Do; receiver: Run
	up      atomic.Bool           // the port is open
	opening atomic.Bool           // Run has not tried the port yet (or waits for the bus it replaces): queue requests meanwhile
	since   atomic.Int64          // when up last changed, unix ns
	downErr atomic.Pointer[error] // why the port is down (nil: up, or not tried yet)
	stats   *counters             // shared with the bus this one replaces
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
	units       [256]unit // what the line has learnt of each unit
	pieces      int       // reads that brought bytes in the attempt in flight
	prev        prevTx
	finished    bool      // the last attempt ended on a broken answer from the unit, not on silence
	finishedAt  time.Time // when that broken answer arrived
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

// wireTime is what a transaction answered at its first attempt takes on
// the line: its request and answer frames at the line's pace, the unit's
// turnaround between them, and the gap before the next frame.
func (b *Bus) wireTime(r *Request) time.Duration {
	frames := len(r.adu) + len(r.Resp) + 3 // the answer's unit and CRC
	return time.Duration(frames)*b.cfg.CharTime + max(b.units[r.Unit].turnaround, 0) + max(b.cfg.FrameGap, r.Gap)
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

// Down returns why the port is down: the error its opening or its last
// transaction failed with; nil while it is up or before it was tried.
func (b *Bus) Down() error {
	if p := b.downErr.Load(); p != nil && !b.up.Load() {
		return *p
	}
	return nil
}

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
				b.downErr.Store(&err)
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
			b.downErr.Store(nil)
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
				// leaves after it; for an answer to a first attempt, what
				// its frames take on the wire at its unit's pace, so that
				// a busy machine's late wakeups do not count against the
				// client whose transaction they fell on.
				var cost, guard time.Duration
				end := b.lastIO
				if r.Attempts > 0 {
					guard = b.guardAfter(r)
					cost = max(end.Sub(b.settled), 0) + guard
					if r.Outcome == OK && r.Attempts == 1 {
						cost = b.wireTime(r) + guard
					}
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
		return ioError{fmt.Errorf("%s: %w", b.cfg.Path, ErrGone)}
	}
	if c, ok := b.port.(Checker); ok {
		if err := c.Check(); err != nil {
			return ioError{err}
		}
	}
	return nil
}

// ErrGone is why a line is down whose device node was removed (a USB
// adapter unplugged).
var ErrGone = errors.New("the device is gone")

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
	if err != nil {
		b.downErr.Store(&err)
	}
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
