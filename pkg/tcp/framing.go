package tcp

import (
	"bufio"
	"errors"
	"io"
)

// Framing is how requests and answers travel on a connection: MBAP
// (Modbus TCP, the default) or another wire's (RTU over TCP,
// pkg/wire/rtuovertcp). The server owns the connection, its limits and its
// handler chain; a Framing only cuts frames.
type Framing interface {
	// Read reads the next request from r into buf (MaxADU bytes) and
	// returns its transaction id (0 where the wire has none), unit and
	// PDU, a slice of buf. An error from r closes the connection
	// quietly; a *FrameError is logged (at most once a second), and
	// closes the connection if it says so, or else is skipped.
	Read(r *bufio.Reader, buf []byte) (tid uint16, unit byte, pdu []byte, err error)
	// HeaderLen is the space an answer needs before its PDU.
	HeaderLen() int
	// Finish completes an answer: frame holds HeaderLen bytes of space,
	// then the PDU. It returns the bytes to write.
	Finish(frame []byte, tid uint16, unit byte) []byte
}

// FrameError is a request that cannot be read: the log says why.
type FrameError struct {
	Err   error
	Close bool // the stream cannot be trusted any more: close the connection
}

func (e *FrameError) Error() string { return e.Err.Error() }
func (e *FrameError) Unwrap() error { return e.Err }

// MBAP is Modbus TCP's framing: a 7-byte header (transaction id,
// protocol id 0, length, unit id) before each PDU.
type MBAP struct{}

func (MBAP) HeaderLen() int { return HeaderLen }

func (MBAP) Read(r *bufio.Reader, buf []byte) (uint16, byte, []byte, error) {
	if _, err := io.ReadFull(r, buf[:HeaderLen]); err != nil {
		return 0, 0, nil, err
	}
	h, err := ParseHeader(buf[:HeaderLen])
	if err != nil {
		return 0, 0, nil, &FrameError{Err: err, Close: true}
	}
	body := buf[HeaderLen : HeaderLen+h.PDULen()]
	if _, err := io.ReadFull(r, body); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return 0, 0, nil, err
	}
	return h.TID, h.Unit, body, nil
}

func (MBAP) Finish(frame []byte, tid uint16, unit byte) []byte {
	putHeader(frame, tid, unit)
	return frame
}
