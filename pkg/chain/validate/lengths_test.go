package validate_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/mcpgw/mcpgw/internal/specframes"
	"github.com/mcpgw/mcpgw/pkg/chain/validate"
	"github.com/mcpgw/mcpgw/pkg/pdu"
	"github.com/mcpgw/mcpgw/pkg/rtu"
	"github.com/mcpgw/mcpgw/pkg/tcp"
	"github.com/mcpgw/mcpgw/pkg/wire/rtuovertcp"
)

// chunks is a port that reads one chunk at a time, with silence (0, nil)
// between chunks, as a serial line does between frames.
type chunks struct {
	parts  [][]byte
	silent bool
	cancel context.CancelFunc
}

func (c *chunks) Read(b []byte) (int, error) {
	if c.silent = !c.silent; c.silent {
		return 0, nil
	}
	if len(c.parts) == 0 {
		c.cancel()
		return 0, io.EOF
	}
	n := copy(b, c.parts[0])
	c.parts = c.parts[1:]
	return n, nil
}
func (c *chunks) Write(b []byte) (int, error)        { return len(b), nil }
func (c *chunks) SetReadTimeout(time.Duration) error { return nil }
func (c *chunks) ResetInputBuffer() error            { return nil }
func (c *chunks) Close() error                       { return nil }

// requests are the PDUs the walk tries: each function code with data of
// every length up to 12 bytes, filled so that quantities and byte counts
// fit their code where the length allows, and the spec's examples.
func requests() [][]byte {
	var out [][]byte
	for fc := 1; fc < 0x80; fc++ {
		for n := 0; n <= 12; n++ {
			p := make([]byte, 1+n)
			p[0] = byte(fc)
			for i := 1; i < len(p); i++ {
				p[i] = byte(i)
			}
			switch {
			case (fc == 15 || fc == 16) && len(p) >= 6:
				p[3], p[4], p[5] = 0, 1, byte(len(p)-6) // one coil or register; the count says what follows
				if fc == 16 {
					p[5] = 2
				}
			case fc == 23 && len(p) >= 10:
				p[3], p[4], p[7], p[8], p[9] = 0, 1, 0, 1, 2
			case fc == 20 || fc == 21:
				if len(p) >= 2 {
					p[1] = byte(len(p) - 2)
				}
			case fc == 8 && len(p) >= 3:
				p[1], p[2] = 0, byte(n%5) // sub-functions 0 to 4
			case fc == 43 && len(p) >= 2:
				p[1] = byte(0x0D + n%2) // MEI types 13 and 14
			}
			out = append(out, p)
		}
	}
	for _, sp := range specframes.MustLoad() {
		out = append(out, sp.Req)
	}
	return out
}

// TestOneTableOfLengths walks the request PDUs of every function code
// through each reader of requests: the check, the serial line's codec,
// a slave line's and the simulated devices' reader (rtu.ReadRequests)
// and RTU over TCP. What the check lets through, every reader takes as
// one frame, ending where the request ends (with another frame right
// behind it), so no request can carry a second frame to a device.
// What it refuses for its length is what a reader would split
// elsewhere.
func TestOneTableOfLengths(t *testing.T) {
	next := rtu.AppendADU(nil, 7, []byte{pdu.ReadHoldingRegisters, 0, 1, 0, 1})
	for _, p := range requests() {
		exc := validate.Request(p)
		adu := rtu.AppendADU(nil, 1, p)
		n, err := rtu.RequestLen(adu)
		_, plen := pdu.RequestLen(p)
		silenceEnds := errors.Is(err, rtu.ErrUnpredictable)
		switch {
		case exc == 0 && !silenceEnds && (err != nil || n != len(adu)):
			t.Errorf("% X passes the check, but the line reads %d bytes of its %d (%v)", p, n, len(adu), err)
		case exc == pdu.IllegalDataValue && plen == nil && err == nil && n == len(adu) && lengthOnly(p):
			t.Errorf("% X: refused, though every reader agrees on its length", p)
		}
		if exc != 0 {
			continue
		}
		// A slave line, and the simulated devices: the frame, then
		// silence, then the next.
		var got [][]byte
		ctx, cancel := context.WithCancel(context.Background())
		port := &chunks{parts: [][]byte{adu, next}, cancel: cancel}
		rtu.ReadRequests(ctx, port, time.Millisecond,
			func(f []byte, _ time.Time) error { got = append(got, bytes.Clone(f)); return nil },
			func(b []byte, err error) { t.Errorf("% X: %v dropped: % X", p, err, b) })
		cancel()
		if len(got) != 2 || !bytes.Equal(got[0], adu) || !bytes.Equal(got[1], next) {
			t.Errorf("% X: a slave line read % X", p, got)
		}
		// RTU over TCP: back to back; a frame that ends at silence
		// ends with what came with it, so its client sends it alone
		// (a CRC that checks is no end: a prefix's passes one time in
		// 256, when its last byte is the CRC's first).
		stream, frames := append(bytes.Clone(adu), next...), [][]byte{adu, next}
		if silenceEnds {
			stream, frames = adu, frames[:1]
		}
		r := bufio.NewReader(bytes.NewReader(stream))
		buf := make([]byte, tcp.MaxADU)
		for i, want := range frames {
			_, unit, q, err := rtuovertcp.Framing{}.Read(r, buf)
			if err != nil || unit != want[0] || !bytes.Equal(q, want[1:len(want)-2]) {
				t.Errorf("% X: RTU over TCP frame %d: unit %d % X %v", p, i, unit, q, err)
				break
			}
		}
	}
}

// lengthOnly reports whether p would pass but for its length: a code
// whose other checks (quantities, values) it satisfies by construction.
func lengthOnly(p []byte) bool {
	switch p[0] {
	case pdu.ReadExceptionStatus, pdu.GetCommEventCounter, pdu.GetCommEventLog, pdu.ReportServerID,
		pdu.WriteSingleRegister, pdu.MaskWriteRegister, pdu.ReadFIFOQueue, pdu.Diagnostics:
		return true
	}
	return false
}
