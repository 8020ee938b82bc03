// Package rtuovertcp is RTU over TCP on the clients' side: the framing
// of SCADA drivers that send Modbus RTU frames (unit, PDU, CRC) on a TCP
// connection instead of MBAP, one at a time, and expect RTU frames back.
// The gateway's TCP server serves it with the same limits and handler
// chain as Modbus TCP (tcp.Server.Framing).
//
// A request's end comes from its function code and byte count, as on a
// serial line (rtu.RequestLen); one whose length the spec does not
// define ends with what has arrived. A frame whose CRC fails is dropped
// and logged, with whatever came with it, as a device drops a broken
// frame: the client gets no answer and times out.
package rtuovertcp

import (
	"bufio"
	"errors"
	"fmt"

	"github.com/mcpgw/mcpgw/pkg/crc"
	"github.com/mcpgw/mcpgw/pkg/rtu"
	"github.com/mcpgw/mcpgw/pkg/tcp"
)

// Framing is RTU over TCP's tcp.Framing.
type Framing struct{}

var _ tcp.Framing = Framing{}

// HeaderLen is the unit id before an answer's PDU.
func (Framing) HeaderLen() int { return 1 }

// Read reads one RTU request frame.
func (Framing) Read(r *bufio.Reader, buf []byte) (uint16, byte, []byte, error) {
	need := 2
	for {
		b, err := r.Peek(need)
		if err != nil {
			return 0, 0, nil, err // closed, or idle too long: no frame is whole
		}
		n, err := rtu.RequestLen(b)
		switch {
		case errors.Is(err, rtu.ErrNeedMore):
			need = n
			continue
		case errors.Is(err, rtu.ErrUnpredictable):
			n = max(len(b), r.Buffered()) // a user-defined code: what came with it
		case err != nil:
			r.Discard(r.Buffered())
			return 0, 0, nil, &tcp.FrameError{Err: fmt.Errorf("rtu over tcp: %w", err)}
		}
		if n > rtu.MaxADU {
			r.Discard(r.Buffered())
			return 0, 0, nil, &tcp.FrameError{Err: rtu.ErrBadLength}
		}
		if b, err = r.Peek(n); err != nil {
			return 0, 0, nil, err
		}
		if n < rtu.MinADU || !crc.Valid(b) {
			// Dropped with whatever came with it: the client resends or
			// times out, as it would with a device.
			r.Discard(max(n, r.Buffered()))
			return 0, 0, nil, &tcp.FrameError{Err: fmt.Errorf("rtu over tcp: %w: % X", rtu.ErrBadCRC, b)}
		}
		copy(buf, b)
		r.Discard(n)
		return 0, buf[0], buf[1 : n-crc.Size], nil
	}
}

// Finish writes the unit before the PDU and appends the CRC.
func (Framing) Finish(frame []byte, _ uint16, unit byte) []byte {
	frame[0] = unit
	return crc.Append(frame, crc.Checksum(frame))
}
