// Package ascii is Modbus ASCII on a serial line (mode = "ascii" on a
// [[bus]]): each frame is ':', the unit, PDU and LRC in hexadecimal,
// then CR LF (Modbus over Serial Line v1.02, 2.5.2); 7 data bits by
// default.
//
// The line's owner (rtu.Bus) keeps its queue, retries, offline rule and
// recovery: a Port speaks RTU frames to it and ASCII on the wire. Each
// ASCII frame that arrives whole is handed on as the RTU frame it
// carries; one whose LRC is wrong is handed on with a broken CRC, so the
// line counts and recovers from it as from a bad CRC. Anything outside a
// frame (before ':'), and a frame that is not hexadecimal, is dropped.
package ascii

import (
	"bytes"
	"encoding/hex"
	"errors"
	"time"

	"github.com/mcpgw/mcpgw/pkg/crc"
	"github.com/mcpgw/mcpgw/pkg/rtu"
)

// MaxFrame is the longest ASCII frame: ':' + 2 hex digits for each of
// 255 bytes (unit, PDU, LRC) + CR LF.
const MaxFrame = 1 + 2*255 + 2

// LRC is the longitudinal redundancy check of b: the two's complement of
// the sum of its bytes.
func LRC(b []byte) byte {
	var s byte
	for _, x := range b {
		s += x
	}
	return -s
}

// Append appends the ASCII frame of unit and PDU p to dst.
func Append(dst []byte, unit byte, p []byte) []byte {
	body := append([]byte{unit}, p...)
	body = append(body, LRC(body))
	dst = append(dst, ':')
	dst = hex.AppendEncode(dst, body)
	for i := len(dst) - 2*len(body); i < len(dst); i++ {
		if dst[i] >= 'a' {
			dst[i] -= 'a' - 'A' // the spec's examples are upper case
		}
	}
	return append(dst, '\r', '\n')
}

// ErrLRC means a frame's LRC does not match its contents.
var ErrLRC = errors.New("ascii: bad LRC")

// ErrFrame means a frame is not hexadecimal of whole bytes, or too short.
var ErrFrame = errors.New("ascii: not a frame")

// Parse decodes one ASCII frame (from ':' to CR LF included) into unit
// and PDU, appended to dst (unit first).
func Parse(dst, frame []byte) ([]byte, error) {
	if len(frame) < 1+2*3+2 || frame[0] != ':' || !bytes.HasSuffix(frame, []byte("\r\n")) {
		return dst, ErrFrame
	}
	digits := frame[1 : len(frame)-2]
	if len(digits)%2 != 0 {
		return dst, ErrFrame
	}
	start := len(dst)
	dst, err := hex.AppendDecode(dst, digits)
	if err != nil {
		return dst[:start], ErrFrame
	}
	body := dst[start:]
	if LRC(body[:len(body)-1]) != body[len(body)-1] {
		return dst[:len(dst)-1], ErrLRC
	}
	return dst[:len(dst)-1], nil
}

// Port is an ASCII line as the line's owner sees it: RTU frames.
type Port struct {
	rtu.Port          // the serial port
	rx       []byte   // ASCII bytes of the frame arriving
	pending  []byte   // an RTU frame not yet read
	out      []byte   // the ASCII frame being written
	buf      [64]byte // read buffer
}

// New wraps a serial port of an ASCII line.
func New(p rtu.Port) *Port {
	return &Port{Port: p, rx: make([]byte, 0, MaxFrame), out: make([]byte, 0, MaxFrame)}
}

// Write sends the RTU frame b (unit, PDU, CRC) as an ASCII frame.
func (p *Port) Write(b []byte) (int, error) {
	if len(b) < rtu.MinADU {
		return 0, errors.New("ascii: not an RTU frame")
	}
	p.out = Append(p.out[:0], b[0], b[1:len(b)-crc.Size])
	if _, err := p.Port.Write(p.out); err != nil {
		return 0, err
	}
	return len(b), nil
}

// Read returns the next frame that arrived, as an RTU frame; 0, nil while
// none is whole by the read timeout.
func (p *Port) Read(b []byte) (int, error) {
	for len(p.pending) == 0 {
		n, err := p.Port.Read(p.buf[:])
		if err != nil || n == 0 {
			return 0, err
		}
		for _, c := range p.buf[:n] {
			p.take(c)
		}
	}
	n := copy(b, p.pending)
	p.pending = p.pending[n:]
	return n, nil
}

// take adds one received character to the frame arriving.
func (p *Port) take(c byte) {
	switch {
	case c == ':': // a frame starts, whatever came before
		p.rx = append(p.rx[:0], c)
		return
	case len(p.rx) == 0: // outside a frame
		return
	}
	p.rx = append(p.rx, c)
	if c == '\n' && bytes.HasSuffix(p.rx, []byte("\r\n")) {
		adu, err := Parse(nil, p.rx)
		p.rx = p.rx[:0]
		if len(adu) == 0 {
			return // not even a unit: noise
		}
		sum := crc.Checksum(adu)
		if err != nil {
			sum = ^sum // a broken frame: the line sees a bad CRC
		}
		p.pending = crc.Append(append(p.pending, adu...), sum)
		return
	}
	if len(p.rx) >= MaxFrame {
		p.rx = p.rx[:0] // no end in sight: noise
	}
}

// ResetInputBuffer drops what has arrived.
func (p *Port) ResetInputBuffer() error {
	p.rx, p.pending = p.rx[:0], p.pending[:0]
	return p.Port.ResetInputBuffer()
}

// SetReadTimeout passes the timeout to the serial port.
func (p *Port) SetReadTimeout(d time.Duration) error { return p.Port.SetReadTimeout(d) }

// Check reports whether the serial port underneath is gone, if it can
// tell (rtu.Checker).
func (p *Port) Check() error {
	if c, ok := p.Port.(rtu.Checker); ok {
		return c.Check()
	}
	return nil
}
