// Package tcp implements Modbus TCP: the MBAP codec and a server that
// reads requests from many clients at once and hands each to a Handler.
package tcp

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// MBAP limits from the Modbus Messaging on TCP/IP guide.
const (
	HeaderLen = 7   // transaction id, protocol id, length, unit id
	MinLength = 2   // the length field: unit id + at least a function code
	MaxLength = 254 // unit id + 253-byte PDU
	MaxADU    = HeaderLen - 1 + MaxLength
)

// Header is a decoded MBAP header.
type Header struct {
	TID      uint16 // transaction id, echoed in the answer
	Protocol uint16 // always 0 for Modbus
	Length   uint16 // bytes that follow the length field: unit id + PDU
	Unit     byte
}

// PDULen is the length of the PDU that follows the header.
func (h Header) PDULen() int { return int(h.Length) - 1 }

// Errors of a malformed header: the connection cannot be resynchronised
// after one, so the server closes it.
var (
	ErrProtocol = errors.New("mbap: protocol id is not 0")
	ErrLength   = errors.New("mbap: length field outside 2..254")
	ErrShort    = errors.New("mbap: fewer than 7 header bytes")
)

// ParseHeader decodes and checks the MBAP header at the start of b.
func ParseHeader(b []byte) (Header, error) {
	if len(b) < HeaderLen {
		return Header{}, ErrShort
	}
	h := Header{
		TID:      binary.BigEndian.Uint16(b),
		Protocol: binary.BigEndian.Uint16(b[2:]),
		Length:   binary.BigEndian.Uint16(b[4:]),
		Unit:     b[6],
	}
	if h.Protocol != 0 {
		return h, fmt.Errorf("%w (got %d)", ErrProtocol, h.Protocol)
	}
	if h.Length < MinLength || h.Length > MaxLength {
		return h, fmt.Errorf("%w (got %d)", ErrLength, h.Length)
	}
	return h, nil
}

// AppendADU appends an MBAP header and pdu to dst.
func AppendADU(dst []byte, tid uint16, unit byte, pdu []byte) []byte {
	start := len(dst)
	dst = append(dst, make([]byte, HeaderLen)...)
	dst = append(dst, pdu...)
	putHeader(dst[start:], tid, unit)
	return dst
}

// putHeader writes the MBAP header into the first HeaderLen bytes of
// frame, whose PDU follows them.
func putHeader(frame []byte, tid uint16, unit byte) {
	binary.BigEndian.PutUint16(frame, tid)
	frame[2], frame[3] = 0, 0
	binary.BigEndian.PutUint16(frame[4:], uint16(len(frame)-HeaderLen+1))
	frame[6] = unit
}
