package rtu

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/mcpgw/mcpgw/pkg/pdu"
)

// Port is what the bus needs of a serial port. A Read that times out
// returns 0, nil (go.bug.st/serial's behaviour): the bus keeps its own
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
	Noise    int     // bytes discarded while waiting for the answer

	enqueued time.Time
	done     chan struct{}
	adu      []byte
}

// ErrNoAnswer means an attempt heard nothing valid before its timeout.
var ErrNoAnswer = errors.New("rtu: no answer")

// ErrMismatch means a frame from the right unit and function answered a
// different request (its byte count or echo does not fit).
var ErrMismatch = errors.New("rtu: answer does not fit the request")

// Config is one serial line's behaviour. Zero values take the defaults
// noted on each field.
type Config struct {
	Name           string
	Open           func() (Port, error) // opens (and reopens) the port
	CharTime       time.Duration        // one character on the wire; see CharTime
	FrameGap       time.Duration        // silence that ends a frame: default t3.5 from CharTime
	Timeout        time.Duration        // per attempt: default 500ms
	Retries        int                  // further attempts after the first
	BroadcastDelay time.Duration        // turnaround after a broadcast: default 100ms
	Echo           bool                 // the adapter echoes what is sent: read it back first
	QueueSize      int                  // pending transactions: default 4096
	QueueTimeout   time.Duration        // longest wait in the queue: default none
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

// Bus owns one serial line. Its Run goroutine is the only code that
// touches the port; everyone else hands it Requests through Do.
type Bus struct {
	cfg   Config
	queue chan *Request // senders: Do; receiver: Run
	up    atomic.Bool   // the port is open

	// Owned by Run.
	port      Port
	buf       []byte
	rx        [MaxADU]byte
	lastIO    time.Time // last byte written or read
	quietTill time.Time // no transmission before this (broadcast turnaround)
	unsettled time.Duration
	expect    Expect
	lenFn     LenFunc
	stats     Stats
}

// Stats are a line's counters, after the FC 08 diagnostics counters.
type Stats struct {
	Requests, Answers, Exceptions, Timeouts, CRCErrors, Unexpected, NoiseBytes, LateBytes uint64
}

// NewBus checks cfg and returns a bus; start it with Run.
func NewBus(cfg Config) *Bus {
	if cfg.CharTime <= 0 {
		cfg.CharTime = CharTime(19200, 11)
	}
	if cfg.FrameGap <= 0 {
		cfg.FrameGap = FrameGap(cfg.CharTime)
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
	b := &Bus{cfg: cfg, queue: make(chan *Request, cfg.QueueSize), buf: make([]byte, 0, 2*MaxADU)}
	b.lenFn = b.expect.Len
	return b
}

// Name returns the line's name.
func (b *Bus) Name() string { return b.cfg.Name }

// Up reports whether the line's port is open.
func (b *Bus) Up() bool { return b.up.Load() }

// Do runs r on the line and returns when it is done or ctx ends. A line
// that is down or full answers at once (LineDown, QueueFull).
func (b *Bus) Do(ctx context.Context, r *Request) {
	r.Resp, r.Err, r.Attempts, r.Noise = r.Resp[:0], nil, 0, 0
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
	select {
	case <-r.done:
	case <-ctx.Done():
		// The bus still owns r until it signals done; wait for it so the
		// caller may reuse r. The transaction is bounded by its timeouts.
		<-r.done
	}
}

// Run serves the line until ctx ends: it opens the port (retrying with
// backoff while it cannot), runs queued transactions one at a time, and
// reopens the port after an I/O error. It closes the port before it returns.
func (b *Bus) Run(ctx context.Context) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		if b.port == nil {
			p, err := b.cfg.Open()
			if err != nil {
				b.cfg.Log.Warn("serial line down, will retry", "line", b.cfg.Name, "err", err, "retry_in", backoff)
				b.failQueued()
				if !sleepCtx(ctx, backoff) {
					break
				}
				backoff = min(backoff*2, 3*time.Second)
				continue
			}
			b.port, backoff = p, 100*time.Millisecond
			b.port.ResetInputBuffer()
			b.lastIO = time.Now()
			b.up.Store(true)
			b.cfg.Log.Info("serial line up", "line", b.cfg.Name)
		}
		select {
		case <-ctx.Done():
		case r := <-b.queue:
			b.serve(r)
			r.done <- struct{}{}
		}
	}
	b.closePort(nil)
	b.failQueued()
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

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// ioError marks a failure of the port itself, as opposed to the protocol.
type ioError struct{ err error }

func (e ioError) Error() string { return e.err.Error() }
func (e ioError) Unwrap() error { return e.err }

func (b *Bus) serve(r *Request) {
	if b.port == nil {
		r.Outcome = LineDown
		return
	}
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
	b.stats.Requests++
	for range 1 + retries {
		err := b.attempt(r, timeout)
		if err == nil {
			if r.Unit == pdu.Broadcast {
				r.Outcome = Sent
			} else {
				r.Outcome = OK
				b.stats.Answers++
				if _, ok := pdu.IsException(r.Resp); ok {
					b.stats.Exceptions++
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
	b.stats.Timeouts++
}

// settle waits before a transmission until the line is free: the
// broadcast turnaround, the inter-frame gap since the last byte, and after
// a failed attempt, silence for as long as that attempt's timeout from the
// moment it gave up, so that a late answer is drained here and never taken
// for the next request's.
func (b *Bus) settle() error {
	if d := time.Until(b.quietTill); d > 0 {
		time.Sleep(d)
	}
	quiet := b.cfg.FrameGap
	if b.unsettled > 0 {
		quiet, b.unsettled = b.unsettled, 0
	}
	for {
		wait := quiet - time.Since(b.lastIO)
		if wait <= 0 {
			break
		}
		b.port.SetReadTimeout(wait)
		n, err := b.port.Read(b.rx[:])
		if err != nil {
			return ioError{fmt.Errorf("read: %w", err)}
		}
		if n > 0 {
			b.lastIO = time.Now()
			b.stats.LateBytes += uint64(n)
			b.cfg.Log.Debug("discarded late bytes", "line", b.cfg.Name, "hex", hex.EncodeToString(b.rx[:n]))
		}
	}
	if err := b.port.ResetInputBuffer(); err != nil {
		return ioError{fmt.Errorf("flush input: %w", err)}
	}
	return nil
}

// attempt sends r once and waits up to timeout for its answer.
func (b *Bus) attempt(r *Request, timeout time.Duration) error {
	if err := b.settle(); err != nil {
		return err
	}
	r.Attempts++
	if _, err := b.port.Write(r.adu); err != nil {
		return ioError{fmt.Errorf("write: %w", err)}
	}
	start := time.Now()
	b.lastIO = start
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
					if rest := len(b.buf) - used; rest > 0 {
						b.noise(r, b.buf[used:], "trailing bytes after answer")
					}
					return nil
				}
			}
			if errors.Is(err, ErrNeedMore) {
				break
			}
			b.noise(r, b.buf[:used], err.Error())
			lastErr = err
			b.buf = b.buf[:copy(b.buf, b.buf[used:])]
		}
		now := time.Now()
		if !now.Before(deadline) {
			if len(b.buf) > 0 {
				b.noise(r, b.buf, "incomplete frame at timeout")
				lastErr = ErrShortFrame
			}
			return lastErr
		}
		wait := deadline.Sub(now)
		if len(b.buf) > 0 {
			// Mid-frame: a silence of one frame gap ends it.
			wait = min(wait, b.cfg.FrameGap)
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
		b.buf = append(b.buf, b.rx[:n]...)
	}
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
		b.buf = append(b.buf, b.rx[:n]...)
	}
	if string(b.buf[:len(adu)]) != string(adu) {
		return fmt.Errorf("rtu: echo differs from the request (%x): %w", b.buf[:len(adu)], ErrUnexpected)
	}
	b.buf = b.buf[:copy(b.buf, b.buf[len(adu):])]
	return nil
}

func (b *Bus) noise(r *Request, p []byte, why string) {
	r.Noise += len(p)
	b.stats.NoiseBytes += uint64(len(p))
	switch why {
	case ErrBadCRC.Error():
		b.stats.CRCErrors++
	case ErrUnexpected.Error(), ErrMismatch.Error():
		b.stats.Unexpected++
	}
	if b.cfg.Log.Enabled(context.Background(), slog.LevelDebug) {
		b.cfg.Log.Debug("discarded bytes", "line", b.cfg.Name, "unit", r.Unit, "why", why, "hex", hex.EncodeToString(p))
	}
}
