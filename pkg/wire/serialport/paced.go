package serialport

import (
	"errors"
	"runtime"
	"sync"
	"time"
)

// PacedLine is a virtual serial line that keeps a real UART's pace: two
// pseudo-terminal pairs with a pacer between them that delivers each byte
// one character time after the previous one (or after it was sent, if the
// line was idle), one direction at a time, as on half-duplex RS-485.
// Path is the master's end (a gateway or an RTU master opens it),
// DevicePath the devices' end.
type PacedLine struct {
	Path, DevicePath string
	Char             time.Duration

	a, b *Pty
	stop chan struct{}
	wg   sync.WaitGroup
	mu   sync.Mutex // the wire: one direction at a time
	free time.Time  // when the wire is next free
}

// NewPacedLine makes a paced line whose characters take char each, e.g.
// 11 bits at 19200 baud: CharTime would give 572.9 µs.
func NewPacedLine(char time.Duration) (*PacedLine, error) {
	a, err := NewPty()
	if err != nil {
		return nil, err
	}
	b, err := NewPty()
	if err != nil {
		a.Close()
		return nil, err
	}
	l := &PacedLine{Path: a.Path, DevicePath: b.Path, Char: char, a: a, b: b, stop: make(chan struct{})}
	l.wg.Go(func() { l.forward(a.Device, b.Device) })
	l.wg.Go(func() { l.forward(b.Device, a.Device) })
	return l, nil
}

// Close stops the pacer and closes both pairs.
func (l *PacedLine) Close() error {
	close(l.stop)
	l.wg.Wait()
	return errors.Join(l.a.Close(), l.b.Close())
}

func (l *PacedLine) forward(from, to Port) {
	// A thread of its own with a fine timer (see preciseThread): it then
	// wakes within microseconds, where the Go scheduler's timers can be a
	// millisecond late, longer than t1.5 at 19200 baud.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	preciseThread()
	buf := make([]byte, 512)
	for {
		select {
		case <-l.stop:
			return
		default:
		}
		from.SetReadTimeout(50 * time.Millisecond)
		n, err := from.Read(buf)
		if err != nil {
			time.Sleep(10 * time.Millisecond) // the other end is not open yet
			continue
		}
		if n == 0 {
			continue
		}
		arrived := time.Now()
		l.mu.Lock()
		for i := range n {
			// Byte i starts on the wire when the wire is free (and not
			// before it was sent) and is received a character time later.
			start := arrived
			if l.free.After(start) {
				start = l.free
			}
			due := start.Add(l.Char)
			waitUntil(due)
			to.Write(buf[i : i+1])
			l.free = due
		}
		l.mu.Unlock()
	}
}

// waitUntil sleeps the thread until shortly before t, then spins.
func waitUntil(t time.Time) {
	if d := time.Until(t) - 30*time.Microsecond; d > 0 {
		sleepThread(d)
	}
	for time.Now().Before(t) {
	}
}
