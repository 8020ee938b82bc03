// Package serialport opens serial lines for the bus: real ports through
// go.bug.st/serial, and virtual lines (pseudo-terminal pairs) for the
// simulator, the demo and the tests.
package serialport

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/creack/pty"
	"go.bug.st/serial"
	"golang.org/x/sys/unix"
)

// Port is what the bus and the simulator need of a serial port, with
// go.bug.st/serial's read semantics: a Read that times out returns 0, nil;
// a read timeout of zero takes what is there without waiting, a negative
// one (serial.NoTimeout) waits for ever.
type Port interface {
	io.ReadWriter
	SetReadTimeout(t time.Duration) error
	ResetInputBuffer() error
	Close() error
}

// Settings are a serial line's character format.
type Settings struct {
	Baud     int
	DataBits int  // 5..8
	Parity   byte // 'N', 'E' or 'O'
	StopBits int  // 1 or 2
}

// CharBits is the number of bits one character takes on the wire: a start
// bit, the data bits, a parity bit if any, and the stop bits.
func (s Settings) CharBits() int {
	n := 1 + s.DataBits + s.StopBits
	if s.Parity != 'N' {
		n++
	}
	return n
}

// CharTime is how long one character takes on the wire.
func (s Settings) CharTime() time.Duration {
	return time.Duration(s.CharBits()) * time.Second / time.Duration(s.Baud)
}

// Validate names the first setting that is out of range.
func (s Settings) Validate() error {
	switch {
	case s.Baud <= 0:
		return fmt.Errorf("baud %d: must be a positive bit rate such as 9600 or 19200", s.Baud)
	case s.DataBits < 5 || s.DataBits > 8:
		return fmt.Errorf("data_bits %d: must be 5, 6, 7 or 8 (Modbus RTU uses 8)", s.DataBits)
	case s.Parity != 'N' && s.Parity != 'E' && s.Parity != 'O':
		return fmt.Errorf("parity %q: must be \"N\", \"E\" or \"O\"", string(rune(s.Parity)))
	case s.StopBits != 1 && s.StopBits != 2:
		return fmt.Errorf("stop_bits %d: must be 1 or 2", s.StopBits)
	}
	return nil
}

// Open opens a serial port by path, in raw mode with the given settings.
// go.bug.st/serial configures the port; on Linux the reads and writes go
// through a descriptor of our own whose waits are the runtime poller's
// (see pollPort).
func Open(path string, s Settings) (Port, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	p, err := openPolled(path, s)
	if err != nil {
		return nil, fmt.Errorf("open serial port %s: %w", path, err)
	}
	return p, nil
}

// openConfigured opens path with go.bug.st/serial and sets its mode.
func openConfigured(path string, s Settings) (serial.Port, error) {
	mode := &serial.Mode{BaudRate: s.Baud, DataBits: s.DataBits, StopBits: serial.OneStopBit}
	if s.StopBits == 2 {
		mode.StopBits = serial.TwoStopBits
	}
	switch s.Parity {
	case 'E':
		mode.Parity = serial.EvenParity
	case 'O':
		mode.Parity = serial.OddParity
	}
	return serial.Open(path, mode)
}

// LatencyTimer returns the latency timer of the USB serial adapter behind
// path (ftdi_sio and others expose it in sysfs), or 0 if there is none. An
// adapter with one delivers received bytes in bursts up to that far apart.
func LatencyTimer(path string) time.Duration {
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return 0
	}
	b, err := os.ReadFile(filepath.Join("/sys/class/tty", filepath.Base(real), "device", "latency_timer"))
	if err != nil {
		return 0
	}
	ms, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || ms <= 0 {
		return 0
	}
	return time.Duration(ms) * time.Millisecond
}

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

func makeRaw(fd int) error {
	t, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return err
	}
	t.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
	t.Oflag &^= unix.OPOST
	t.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	t.Cflag &^= unix.CSIZE | unix.PARENB
	t.Cflag |= unix.CS8
	t.Cc[unix.VMIN], t.Cc[unix.VTIME] = 1, 0
	return unix.IoctlSetTermios(fd, unix.TCSETS, t)
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
