package pdu

import "errors"

// Errors of RequestLen.
var (
	// ErrNeedMore means the bytes so far do not yet tell the length.
	ErrNeedMore = errors.New("pdu: need more bytes")
	// ErrUnknownLength means the function code does not set the length:
	// the request ends where its transport says (silence on a serial
	// line, the MBAP length on TCP).
	ErrUnknownLength = errors.New("pdu: length not set by the function code")
	// ErrTooLong means a byte count says more than MaxSize.
	ErrTooLong = errors.New("pdu: byte count beyond the largest PDU")
)

// DiagReturnQueryData is the diagnostics (FC 08) sub-function that loops
// its data back: the only one whose request has data of any length.
const DiagReturnQueryData = 0x0000

// RequestLen predicts the length of the request PDU that starts p, from
// its function code and, where there is one, its byte count: the one
// table of request lengths that every reader of requests shares (the
// request check, the serial line, a slave line, RTU over TCP and the
// simulated devices), so that none can split a frame where another would
// not. It returns
//
//   - n, nil: the request is n bytes long;
//   - n, ErrNeedMore: p must have at least n bytes before it can tell;
//   - 0, ErrUnknownLength: the function code does not set the length
//     (user-defined and unassigned codes, FC 43 with a MEI type other
//     than 14, and FC 08 sub-function 0, whose data is looped back at
//     any length);
//   - 0, ErrTooLong: a byte count says more than MaxSize.
func RequestLen(p []byte) (int, error) {
	if len(p) < 1 {
		return 1, ErrNeedMore
	}
	switch p[0] {
	case ReadCoils, ReadDiscreteInputs, ReadHoldingRegisters, ReadInputRegisters,
		WriteSingleCoil, WriteSingleRegister:
		return 5, nil
	case ReadExceptionStatus, GetCommEventCounter, GetCommEventLog, ReportServerID:
		return 1, nil
	case Diagnostics:
		// A sub-function (2 bytes), then two bytes of data, but for
		// return query data, which echoes what it is sent.
		if len(p) < 3 {
			return 3, ErrNeedMore
		}
		if diagSub(p) == DiagReturnQueryData {
			return 0, ErrUnknownLength
		}
		return 5, nil
	case WriteMultipleCoils, WriteMultipleRegisters:
		return counted(p, 6, 5)
	case ReadFileRecord, WriteFileRecord:
		return counted(p, 2, 1)
	case MaskWriteRegister:
		return 7, nil
	case ReadWriteMultipleRegisters:
		return counted(p, 10, 9)
	case ReadFIFOQueue:
		return 3, nil
	case EncapsulatedInterface:
		if len(p) < 2 {
			return 2, ErrNeedMore
		}
		if p[1] == MEIReadDeviceID {
			return 4, nil
		}
	}
	return 0, ErrUnknownLength
}

// counted returns fixed + the byte count at offset k of p.
func counted(p []byte, fixed, k int) (int, error) {
	if len(p) <= k {
		return k + 1, ErrNeedMore
	}
	n := fixed + int(p[k])
	if n > MaxSize {
		return 0, ErrTooLong
	}
	return n, nil
}

// diagSub returns the sub-function of a diagnostics PDU of at least 3
// bytes.
func diagSub(p []byte) uint16 { return uint16(p[1])<<8 | uint16(p[2]) }

// IsReturnQueryData reports whether p is a diagnostics request or answer
// with sub-function 0, return query data: its answer is as long as the
// request, the echo of it.
func IsReturnQueryData(p []byte) bool {
	return len(p) >= 3 && p[0] == Diagnostics && diagSub(p) == DiagReturnQueryData
}
