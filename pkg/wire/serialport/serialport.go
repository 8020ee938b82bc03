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

	"go.bug.st/serial"
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

// Settings are a serial line's character format, and its RS-485 mode.
type Settings struct {
	Baud     int
	DataBits int  // 5..8
	Parity   byte // 'N', 'E' or 'O'
	StopBits int  // 1 or 2
	// RS485, if set, puts the port in the kernel's RS-485 mode (Linux
	// only): the UART drives the transceiver's direction itself.
	RS485 *RS485
}

// RS485 is the kernel's RS-485 mode of a port (the TIOCSRS485 ioctl), as
// edge boxes' built-in RS-485 ports and many HATs need: the UART raises
// RTS to drive the line while it sends and lowers it after.
type RS485 struct {
	RTSLowOnSend bool          // RTS low while sending, high after (the default is the reverse)
	DelayBefore  time.Duration // RTS asserted this long before sending; the kernel counts milliseconds
	DelayAfter   time.Duration // and this long after
}

// The kernel's struct serial_rs485 (linux/serial.h): flags, the delays in
// milliseconds, and padding, eight 32-bit words.
const (
	rs485Enabled      = 1 << 0 // SER_RS485_ENABLED
	rs485RTSOnSend    = 1 << 1 // SER_RS485_RTS_ON_SEND: RTS high while sending
	rs485RTSAfterSend = 1 << 2 // SER_RS485_RTS_AFTER_SEND: RTS high after sending
)

// kernel is r as the kernel's struct serial_rs485: what TIOCSRS485
// gets. A delay is rounded up to whole milliseconds.
func (r RS485) kernel() [8]uint32 {
	var k [8]uint32
	k[0] = rs485Enabled | rs485RTSOnSend
	if r.RTSLowOnSend {
		k[0] = rs485Enabled | rs485RTSAfterSend
	}
	ms := func(d time.Duration) uint32 { return uint32((d + time.Millisecond - 1) / time.Millisecond) }
	k[1], k[2] = ms(r.DelayBefore), ms(r.DelayAfter)
	return k
}

// ErrRS485 is the error of a port that refused RS-485 mode.
var ErrRS485 = errors.New("rs485")

// errRS485 explains a port that refused RS-485 mode.
func errRS485(path string, err error) error {
	return fmt.Errorf("%w: %s cannot be put in the kernel's RS-485 mode (%v): a USB adapter or a serial device server switches direction itself and needs no rs485 = true; a pseudo-terminal has no such mode; on a board's built-in port, check that its device tree enables RS-485", ErrRS485, path, err)
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
