//go:build !windows

package serialport

import (
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"
	"golang.org/x/term"
)

// Pty is a virtual serial line: a pseudo-terminal pair. Path is the device
// node (/dev/pts/N) to give the gateway, or any program, as its port;
// Device is the other end, for a simulated device.
type Pty struct {
	Path   string
	Device Port
	slave  *os.File // held open so the line stays up while programs reopen Path
}

// NewPty makes a pseudo-terminal pair in raw mode.
func NewPty() (*Pty, error) {
	master, slave, err := pty.Open()
	if err != nil {
		return nil, fmt.Errorf("make pseudo-terminal: %w", err)
	}
	if err := makeRaw(int(slave.Fd())); err != nil {
		master.Close()
		slave.Close()
		return nil, fmt.Errorf("pseudo-terminal raw mode: %w", err)
	}
	// pty.Open leaves the master blocking, which defeats read deadlines.
	// A non-blocking duplicate wrapped by os.NewFile goes through the
	// runtime poller, so SetReadDeadline works.
	fd, err := unix.Dup(int(master.Fd()))
	master.Close()
	if err == nil {
		err = unix.SetNonblock(fd, true)
	}
	if err != nil {
		slave.Close()
		return nil, fmt.Errorf("pseudo-terminal master: %w", err)
	}
	return &Pty{
		Path:   slave.Name(),
		Device: &filePort{f: os.NewFile(uintptr(fd), "ptmx")},
		slave:  slave,
	}, nil
}

// Close closes both ends.
func (p *Pty) Close() error {
	return errors.Join(p.Device.Close(), p.slave.Close())
}

// makeRaw puts the terminal in raw mode (cfmakeraw's settings: 8 bits,
// no parity, no echo, no line editing, reads of one byte or more).
func makeRaw(fd int) error {
	_, err := term.MakeRaw(fd)
	return err
}

// filePort adapts a pollable *os.File to Port.
type filePort struct {
	f        *os.File
	timeout  time.Duration
	deadline bool // a read deadline is set on f
}

func (p *filePort) SetReadTimeout(t time.Duration) error { p.timeout = t; return nil }
func (p *filePort) Write(b []byte) (int, error)          { return p.f.Write(b) }
func (p *filePort) Close() error                         { return p.f.Close() }

func (p *filePort) Read(b []byte) (int, error) {
	if p.timeout == 0 {
		return p.readNow(b)
	}
	var deadline time.Time
	if p.timeout > 0 {
		deadline = time.Now().Add(p.timeout)
	}
	if err := p.f.SetReadDeadline(deadline); err != nil {
		return 0, err
	}
	p.deadline = p.timeout > 0
	n, err := p.f.Read(b)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return n, nil
	}
	return n, err
}

// readNow reads what is waiting, without waiting: one read(2) on the
// non-blocking descriptor. (A deadline in the past would fail before
// reading anything, and so would one left from an earlier read.)
func (p *filePort) readNow(b []byte) (int, error) {
	if p.deadline {
		if err := p.f.SetReadDeadline(time.Time{}); err != nil {
			return 0, err
		}
		p.deadline = false
	}
	rc, err := p.f.SyscallConn()
	if err != nil {
		return 0, err
	}
	var n int
	var rerr error
	if err := rc.Read(func(fd uintptr) bool {
		n, rerr = unix.Read(int(fd), b)
		return true
	}); err != nil {
		return 0, err
	}
	switch {
	case rerr == unix.EAGAIN:
		return 0, nil
	case rerr != nil:
		return 0, rerr
	case n == 0 && len(b) > 0:
		return 0, io.EOF
	}
	return n, nil
}

// ResetInputBuffer discards whatever is waiting to be read.
func (p *filePort) ResetInputBuffer() error {
	var buf [256]byte
	for {
		if n, err := p.readNow(buf[:]); n == 0 || err != nil {
			return err
		}
	}
}
