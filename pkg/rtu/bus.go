package rtu

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync/atomic"
	"time"

	"github.com/mcpgw/mcpgw/pkg/capture"
	"github.com/mcpgw/mcpgw/pkg/pdu"
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
	Capture        *capture.Recorder    // records every byte sent and received; nil: none
	Log            *slog.Logger
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
	cfg   Config
	queue chan *Request // senders: Do; receiver: Run
	up    atomic.Bool   // the port is open

	// Owned by Run.
	port        Port
	buf         []byte
	rx          [MaxADU]byte
	lastIO      time.Time // last byte written or read
	quietTill   time.Time // no transmission before this (broadcast turnaround)
	unsettled   time.Duration
	expect      Expect
	lenFn       LenFunc
	dropped     []byte // bytes discarded in the current attempt, for the log
	late        []byte // bytes drained before the current transmission, for the log
	strays      int    // drains of stray bytes since the last one logged
	strayLogged time.Time
	why         error     // the first reason they were discarded
	rxStart     time.Time // when the first byte now in buf arrived
	noiseRec    []byte    // discarded bytes not yet recorded in the capture
	stats       counters
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
	c := &b.stats
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
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	b := &Bus{cfg: cfg, queue: make(chan *Request, cfg.QueueSize), buf: make([]byte, 0, 2*MaxADU),
		dropped: make([]byte, 0, 2*MaxADU), late: make([]byte, 0, 2*MaxADU)}
	b.lenFn = b.expect.Len
	return b
}

// Name returns the line's name.
func (b *Bus) Name() string { return b.cfg.Name }

// Up reports whether the line's port is open.
func (b *Bus) Up() bool { return b.up.Load() }

// Do runs r on the line and returns when it is done. A line that is down
// or full answers at once (LineDown, QueueFull). Once queued, a
// transaction runs to its end, bounded by its timeouts and retries,
// whatever ctx does: the bus owns r until then, and the caller may reuse
// r as soon as Do returns.
func (b *Bus) Do(ctx context.Context, r *Request) {
	r.Resp, r.Err, r.Attempts = r.Resp[:0], nil, 0
	if !b.up.Load() {
		r.Outcome = LineDown
		return
	}
	if r.done == nil {
		r.done = make(chan struct{}, 1)
	}
	r.enqueued = time.Now()
	select {
	case b.queue <- r:
	default:
		r.Outcome = QueueFull
		return
	}
	<-r.done
}

// Run serves the line until ctx ends: it opens the port (retrying while it
// cannot), runs queued transactions one at a time, and reopens the port
// after an I/O error. It closes the port before it returns.
//
// While the port's device node is missing (Config.Path), Run looks for it
// every 200 ms and opens it as soon as it is back; other open failures are
// retried with backoff from 100 ms to 3 s.
func (b *Bus) Run(ctx context.Context) {
	backoff := 100 * time.Millisecond
	var (
		lastErr  string
		lastLog  time.Time
		downFrom time.Time
	)
	for ctx.Err() == nil {
		if b.port == nil {
			p, err := b.cfg.Open()
			if err != nil {
				if downFrom.IsZero() {
					downFrom = time.Now()
					b.stats.lineDowns.Add(1)
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
			b.port.ResetInputBuffer()
			b.lastIO = time.Now()
			b.up.Store(true)
			if downFrom.IsZero() {
				b.cfg.Log.Info("serial line up", "line", b.cfg.Name)
			} else {
				b.cfg.Log.Info("serial line up again", "line", b.cfg.Name, "was_down_for", time.Since(downFrom).Round(time.Millisecond))
			}
			downFrom = time.Time{}
		}
		select {
		case <-ctx.Done():
		case r := <-b.queue:
			b.serve(r)
			r.done <- struct{}{}
			if b.port == nil {
				downFrom = time.Now()
				b.stats.lineDowns.Add(1)
			}
		}
	}
	b.closePort(nil)
	b.failQueued()
	st := b.Stats()
	b.cfg.Log.Info("serial line closed", "line", b.cfg.Name, "requests", st.Requests, "frames", st.Frames,
		"answers", st.Answers, "exceptions", st.Exceptions, "timeouts", st.Timeouts, "crc_errors", st.CRCErrors,
		"unexpected", st.Unexpected, "short_frames", st.ShortFrame, "noise_bytes", st.NoiseBytes, "late_bytes", st.LateBytes,
		"line_downs", st.LineDowns)
}

// waitDown waits d while the line is down, answering whatever is queued
// with LineDown at once. It returns false if ctx ended.
func (b *Bus) waitDown(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
			return true
		case r := <-b.queue:
			r.Outcome = LineDown
			r.done <- struct{}{}
		}
	}
}

func missing(path string) bool {
	_, err := os.Stat(path)
	return errors.Is(err, os.ErrNotExist)
}

// failQueued answers every queued request with LineDown.
func (b *Bus) failQueued() {
	for {
		select {
		case r := <-b.queue:
			r.Outcome = LineDown
			r.done <- struct{}{}
		default:
			return
		}
	}
}

func (b *Bus) closePort(err error) {
	b.up.Store(false)
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
func (b *Bus) serve(r *Request) {
	if b.cfg.QueueTimeout > 0 && time.Since(r.enqueued) > b.cfg.QueueTimeout {
		r.Outcome = Expired
		return
	}
	timeout, retries := r.Timeout, r.Retries
	if timeout <= 0 {
		timeout = b.cfg.Timeout
	}
	if retries < 0 {
		retries = b.cfg.Retries
	}
	r.adu = AppendADU(r.adu[:0], r.Unit, r.PDU)
	b.stats.requests.Add(1)
	for range 1 + retries {
		err := b.attempt(r, timeout)
		if err == nil {
			if r.Attempts > 1 {
				// An earlier attempt may still be answered: drain it before
				// the next request, as after a timeout.
				b.unsettled, b.lastIO = timeout, time.Now()
			}
			if r.Unit == pdu.Broadcast {
				r.Outcome = Sent
			} else {
				r.Outcome = OK
				b.stats.answers.Add(1)
				if _, ok := pdu.IsException(r.Resp); ok {
					b.stats.exceptions.Add(1)
				}
			}
			return
		}
		var ioe ioError
		if errors.As(err, &ioe) {
			b.closePort(err)
			r.Outcome, r.Err = LineDown, err
			return
		}
		r.Err = err
		// The device may still answer this attempt, and other devices on a
		// multi-drop line may take the next frame for that answer (libmodbus
		// slaves ignore the frame after a request to another unit). So the
		// next frame waits for the line to be quiet for as long again,
		// counted from now, draining what arrives as late (see settle).
		b.unsettled, b.lastIO = timeout, time.Now()
	}
	r.Outcome = Timeout
	b.stats.timeouts.Add(1)
}

// settle waits before a transmission until the line is free: the
// broadcast turnaround, the inter-frame gap since the last byte, and after
// a failed attempt, silence for as long as that attempt's timeout from the
// moment it gave up, so that a late answer is drained here and never taken
// for the next request's.
//
// It always looks at least once, without waiting, at what arrived since
// the last frame. Bytes found there are a late answer or noise: they are
// recorded and logged like any discarded bytes, and the line must then be
// quiet for the gap again before the request goes out, as the spec asks
// of a master. (This read is also cheaper than flushing the input: one
// poll instead of an ioctl, a few microseconds on every transaction.)
func (b *Bus) settle() error {
	if d := time.Until(b.quietTill); d > 0 {
		time.Sleep(d)
	}
	quiet, afterFailure := b.cfg.FrameGap, b.unsettled > 0
	if afterFailure {
		quiet, b.unsettled = b.unsettled, 0
	}
	b.late = b.late[:0]
	total := 0
	defer func() {
		if total > 0 {
			b.reportLate(total, afterFailure)
		}
	}()
	for {
		b.port.SetReadTimeout(max(quiet-time.Since(b.lastIO), 0))
		n, err := b.port.Read(b.rx[:])
		if err != nil {
			return ioError{fmt.Errorf("read: %w", err)}
		}
		if n > 0 {
			b.lastIO = time.Now()
			b.cfg.Capture.Record(capture.RX, b.lastIO, b.lastIO, b.rx[:n])
			b.stats.lateBytes.Add(uint64(n))
			total += n
			b.late = append(b.late, b.rx[:min(n, cap(b.late)-len(b.late))]...)
			continue
		}
		if time.Since(b.lastIO) >= quiet {
			return nil
		}
	}
}

// strayLogEvery is how often at most stray bytes between transactions
// are logged on a line; they are counted every time.
const strayLogEvery = time.Minute

// reportLate logs the n bytes (kept in b.late) that settle drained. After
// a failed attempt they are that attempt's late answer, logged each time.
// Otherwise they came unasked between transactions: a device repeating
// itself, noise, or the glitch some RS-485 transceivers make when they
// turn the line around, which on such a line comes with every
// transaction. Those are logged at most once a minute, with how many
// times it happened since.
func (b *Bus) reportLate(n int, afterFailure bool) {
	attrs := []any{"line", b.cfg.Name, "bytes", n, "hex", hex.EncodeToString(b.late), "complete", n == len(b.late)}
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

// attempt sends r once and waits up to timeout for its answer. Bytes it
// had to discard are logged once, with the reason, when it ends.
func (b *Bus) attempt(r *Request, timeout time.Duration) error {
	b.dropped, b.why = b.dropped[:0], nil
	err := b.exchange(r, timeout)
	b.recordNoise()
	if len(b.dropped) > 0 {
		b.reportDropped(r, err)
	}
	return err
}

func (b *Bus) exchange(r *Request, timeout time.Duration) error {
	if err := b.settle(); err != nil {
		return err
	}
	r.Attempts++
	b.stats.frames.Add(1)
	if _, err := b.port.Write(r.adu); err != nil {
		return ioError{fmt.Errorf("write: %w", err)}
	}
	start := time.Now()
	b.lastIO = start
	b.cfg.Capture.Record(capture.TX, start, start, r.adu)
	deadline := start.Add(timeout)
	b.buf = b.buf[:0]
	if b.cfg.Echo {
		if err := b.readEcho(r.adu, deadline); err != nil {
			return err
		}
	}
	if r.Unit == pdu.Broadcast {
		b.quietTill = time.Now().Add(b.cfg.BroadcastDelay)
		return nil
	}
	b.expect = Expect{Unit: r.Unit, FC: r.PDU[0]}
	var lastErr error = ErrNoAnswer
	silent := false
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
					if rest := len(b.buf) - used; rest > 0 {
						b.noise(r, b.buf[used:], errTrailing)
					}
					return nil
				}
			}
			if errors.Is(err, ErrNeedMore) {
				break
			}
			b.noise(r, b.buf[:used], err)
			lastErr = err
			b.buf = b.buf[:copy(b.buf, b.buf[used:])]
		}
		now := time.Now()
		if !now.Before(deadline) {
			if len(b.buf) > 0 {
				b.noise(r, b.buf, ErrShortFrame)
				lastErr = ErrShortFrame
			}
			return lastErr
		}
		wait := deadline.Sub(now)
		if len(b.buf) > 0 {
			// Mid-frame: silence of t1.5 makes a frame of known length
			// incomplete; one of unpredictable length ends at t3.5.
			gap := b.cfg.CharGap
			if _, err := b.lenFn(b.buf); errors.Is(err, ErrUnpredictable) {
				gap = b.cfg.FrameGap
			}
			wait = min(wait, gap)
		}
		b.port.SetReadTimeout(wait)
		n, err := b.port.Read(b.rx[:])
		if err != nil {
			return ioError{fmt.Errorf("read: %w", err)}
		}
		if n == 0 {
			silent = len(b.buf) > 0
			continue
		}
		silent = false
		b.lastIO = time.Now()
		if len(b.buf) == 0 {
			b.rxStart = b.lastIO
		}
		b.buf = append(b.buf, b.rx[:n]...)
		b.awaitRest(deadline)
	}
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
	b.cfg.Log.Warn("discarded bytes on the line", "line", b.cfg.Name, "unit", r.Unit, "fc", r.PDU[0],
		"why", b.why.Error(), "bytes", len(b.dropped), "hex", hex.EncodeToString(b.dropped), "attempt", r.Attempts, "result", result)
}
