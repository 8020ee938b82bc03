package rtu

import (
	"errors"

	"github.com/mcpgw/mcpgw/pkg/crc"
	"github.com/mcpgw/mcpgw/pkg/pdu"
)

// Frame size limits from Modbus over Serial Line v1.02.
const (
	MinADU = 4   // unit + function code + CRC
	MaxADU = 256 // unit + 253-byte PDU + CRC
	// MinAnswer is the shortest answer of a public function code: an
	// exception, or FC 7's status (unit, function, one byte, CRC).
	MinAnswer = 5
)

// Errors of the RTU protocol layer. Transport errors (I/O, timeouts) are
// reported separately by the Bus.
var (
	// ErrNeedMore means the bytes so far do not yet tell where the frame
	// ends, or the frame is not complete yet.
	ErrNeedMore = errors.New("rtu: need more bytes")
	// ErrUnpredictable means the function code does not define the frame's
	// length; the frame ends at t3.5 of silence.
	ErrUnpredictable = errors.New("rtu: frame length not predictable, ends at silence")
	// ErrBadCRC means a frame of the predicted length failed its CRC check.
	ErrBadCRC = errors.New("rtu: bad CRC")
	// ErrShortFrame means the line fell silent before a frame was whole.
	ErrShortFrame = errors.New("rtu: incomplete frame")
	// ErrBadLength means a length field points past MaxADU: not a frame.
	ErrBadLength = errors.New("rtu: length field out of range")
	// ErrUnexpected means a frame does not start with the unit and function
	// code the reader is waiting for.
	ErrUnexpected = errors.New("rtu: unexpected unit or function code")
)

// LenFunc predicts the length of the ADU at the start of b. It returns the
// whole length and nil; or ErrNeedMore with the smallest length b must
// reach before it can tell; or ErrUnpredictable; or another error if b
// cannot start a frame.
type LenFunc func(b []byte) (int, error)

// byteCount returns fixed + the byte at offset k of b.
func byteCount(b []byte, fixed, k int) (int, error) {
	if len(b) <= k {
		return k + 1, ErrNeedMore
	}
	n := fixed + int(b[k])
	if n > MaxADU {
		return 0, ErrBadLength
	}
	return n, nil
}

// RequestLen predicts the length of the RTU request ADU at the start of
// b, from its function code and, where there is one, its byte count
// (pdu.RequestLen: the table every reader of requests shares).
func RequestLen(b []byte) (int, error) {
	if len(b) < 2 {
		return 2, ErrNeedMore
	}
	n, err := pdu.RequestLen(b[1:])
	switch {
	case err == nil:
		return 1 + n + crc.Size, nil
	case errors.Is(err, pdu.ErrNeedMore):
		return 1 + n, ErrNeedMore
	case errors.Is(err, pdu.ErrUnknownLength):
		return 0, ErrUnpredictable
	}
	return 0, ErrBadLength
}

// ResponseLen predicts the length of the RTU response ADU at the start of
// b. Exception responses are 5 bytes whatever the function.
func ResponseLen(b []byte) (int, error) {
	if len(b) < 2 {
		return 2, ErrNeedMore
	}
	fc := b[1]
	if fc&0x80 != 0 {
		return 5, nil
	}
	switch fc {
	case pdu.ReadCoils, pdu.ReadDiscreteInputs, pdu.ReadHoldingRegisters,
		pdu.ReadInputRegisters, pdu.GetCommEventLog, pdu.ReportServerID,
		pdu.ReadFileRecord, pdu.WriteFileRecord, pdu.ReadWriteMultipleRegisters:
		return byteCount(b, 5, 2)
	case pdu.WriteSingleCoil, pdu.WriteSingleRegister,
		pdu.GetCommEventCounter, pdu.WriteMultipleCoils, pdu.WriteMultipleRegisters:
		return 8, nil
	case pdu.Diagnostics:
		// The echo of the request: 8 bytes, but for return query data,
		// as long as its request (see Expect).
		if len(b) < 4 {
			return 4, ErrNeedMore
		}
		if pdu.IsReturnQueryData(b[1:]) {
			return 0, ErrUnpredictable
		}
		return 8, nil
	case pdu.ReadExceptionStatus:
		return 5, nil
	case pdu.MaskWriteRegister:
		return 10, nil
	case pdu.ReadFIFOQueue:
		if len(b) < 4 {
			return 4, ErrNeedMore
		}
		n := 6 + (int(b[2])<<8 | int(b[3]))
		if n > MaxADU {
			return 0, ErrBadLength
		}
		return n, nil
	case pdu.EncapsulatedInterface:
		if len(b) < 3 {
			return 3, ErrNeedMore
		}
		if b[2] == pdu.MEIReadDeviceID {
			return deviceIDLen(b)
		}
	}
	return 0, ErrUnpredictable
}

// deviceIDLen walks the object list of a read device identification
// response: unit, 2B, 0E, code, conformity, more, next id, count, then
// id, length, value for each object, then the CRC.
func deviceIDLen(b []byte) (int, error) {
	const header = 8
	if len(b) < header {
		return header, ErrNeedMore
	}
	n := header
	for range int(b[7]) {
		if len(b) < n+2 {
			return n + 2, ErrNeedMore
		}
		n += 2 + int(b[n+1])
		if n+crc.Size > MaxADU {
			return 0, ErrBadLength
		}
	}
	return n + crc.Size, nil
}

// Expect predicts the length of one particular answer: the response of
// unit Unit to function code FC, normal or exception. Any other first two
// bytes are reported as ErrUnexpected, so that Scan drops them as noise.
type Expect struct {
	Unit, FC byte
	// Echo, if not 0, is the length of a normal answer whose length only
	// its request tells: the echo of a diagnostics return query data
	// request (FC 08, sub-function 0), as long as the request's ADU.
	Echo int
}

// ExpectAnswer returns the Expect for the answer of unit to request PDU
// req.
func ExpectAnswer(unit byte, req []byte) Expect {
	e := Expect{Unit: unit, FC: req[0]}
	if pdu.IsReturnQueryData(req) {
		e.Echo = 1 + len(req) + crc.Size
	}
	return e
}

// Len is a LenFunc.
func (e *Expect) Len(b []byte) (int, error) {
	if len(b) >= 1 && b[0] != e.Unit {
		return 0, ErrUnexpected
	}
	if len(b) >= 2 && !pdu.Answers(e.FC, b[1]) {
		return 0, ErrUnexpected
	}
	if e.Echo > 0 && len(b) >= 2 && b[1] == e.FC {
		return e.Echo, nil
	}
	return ResponseLen(b)
}

// AppendADU appends an RTU ADU (unit, PDU, CRC) to dst.
func AppendADU(dst []byte, unit byte, p []byte) []byte {
	start := len(dst)
	dst = append(dst, unit)
	dst = append(dst, p...)
	return crc.Append(dst, crc.Checksum(dst[start:]))
}

// Scan splits the first frame off buf. lenFn predicts frame lengths
// (RequestLen, ResponseLen, or a filter over them); silent says the line
// has been quiet for t3.5 since the last byte of buf arrived, which ends
// frames whose length cannot be predicted and marks short ones incomplete.
//
// It returns the frame (a slice of buf, CRC included) and how many bytes of
// buf it used. If err is ErrNeedMore, nothing was used: read more. Any
// other error comes with consumed == 1: that byte is noise or the start of
// a broken frame; drop it and scan again to resynchronise.
func Scan(buf []byte, lenFn LenFunc, silent bool) (frame []byte, consumed int, err error) {
	if len(buf) == 0 {
		return nil, 0, ErrNeedMore
	}
	n, err := lenFn(buf)
	switch {
	case err == nil && len(buf) >= n:
		if n < MinADU || !crc.Valid(buf[:n]) {
			return nil, 1, ErrBadCRC
		}
		return buf[:n], n, nil
	case err == nil || errors.Is(err, ErrNeedMore):
		if silent {
			return nil, 1, ErrShortFrame
		}
		return nil, 0, ErrNeedMore
	case errors.Is(err, ErrUnpredictable):
		if !silent {
			return nil, 0, ErrNeedMore
		}
		if len(buf) < MinADU {
			return nil, 1, ErrShortFrame
		}
		if len(buf) > MaxADU || !crc.Valid(buf) {
			return nil, 1, ErrBadCRC
		}
		return buf, len(buf), nil
	default:
		return nil, 1, err
	}
}

// Matches reports whether response PDU resp can be the answer to request
// PDU req: the byte count of a read must fit the quantity asked for, and
// the echo of a write must repeat the request. Exceptions always fit; so
// does anything whose shape the request does not determine.
func Matches(req, resp []byte) bool {
	if len(req) == 0 || len(resp) == 0 {
		return false
	}
	if _, ok := pdu.IsException(resp); ok {
		return len(resp) == 2
	}
	qty := func(off int) int {
		if len(req) < off+2 {
			return -1
		}
		return int(req[off])<<8 | int(req[off+1])
	}
	switch req[0] {
	case pdu.ReadCoils, pdu.ReadDiscreteInputs:
		return len(resp) >= 2 && int(resp[1]) == (qty(3)+7)/8
	case pdu.ReadHoldingRegisters, pdu.ReadInputRegisters:
		return len(resp) >= 2 && int(resp[1]) == 2*qty(3)
	case pdu.ReadWriteMultipleRegisters:
		return len(resp) >= 2 && int(resp[1]) == 2*qty(3)
	case pdu.WriteSingleCoil, pdu.WriteSingleRegister, pdu.MaskWriteRegister:
		return string(resp) == string(req)
	case pdu.WriteMultipleCoils, pdu.WriteMultipleRegisters:
		return len(req) >= 5 && string(resp) == string(req[:5])
	case pdu.Diagnostics:
		// Return query data echoes the whole request; the other
		// sub-functions answer under the same sub-function with two
		// bytes of data.
		if pdu.IsReturnQueryData(req) {
			return string(resp) == string(req)
		}
		return len(req) >= 3 && len(resp) == 5 && string(resp[:3]) == string(req[:3])
	}
	return true
}

// Confusable reports whether an answer to request PDU a, sent to the same
// unit, would also pass for an answer to request PDU b (see Matches): the
// same function code, and for reads the same quantity, for writes the same
// echo. An RTU answer carries no transaction id, so a late answer to a
// can be told from b's only when they are not confusable.
func Confusable(a, b []byte) bool {
	if len(a) == 0 || len(b) == 0 || a[0] != b[0] {
		return false
	}
	same := func(from, to int) bool {
		return len(a) >= to && len(b) >= to && string(a[from:to]) == string(b[from:to])
	}
	switch a[0] {
	case pdu.ReadCoils, pdu.ReadDiscreteInputs, pdu.ReadHoldingRegisters, pdu.ReadInputRegisters,
		pdu.ReadWriteMultipleRegisters:
		return same(3, 5) // the quantity read sets the byte count
	case pdu.WriteSingleCoil, pdu.WriteSingleRegister, pdu.MaskWriteRegister:
		return string(a) == string(b) // the answer is the request's echo
	case pdu.WriteMultipleCoils, pdu.WriteMultipleRegisters:
		return same(0, 5) // the answer echoes address and quantity
	}
	return true
}
