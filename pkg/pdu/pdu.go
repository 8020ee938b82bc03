// Package pdu holds what every Modbus layer shares: function codes,
// exception codes as values, and the limits of the protocol data unit.
// It has no I/O and no dependencies.
package pdu

import "fmt"

// Limits from the Modbus Application Protocol v1.1b3.
const (
	MaxSize    = 253 // a PDU: function code + data
	MaxUnit    = 247 // highest device address
	Broadcast  = 0   // the broadcast unit id: writes only, nobody answers
	exceptFlag = 0x80
)

// Function codes the gateway and the simulated devices know by name.
// Every other code passes through the gateway unchanged.
const (
	ReadCoils                  byte = 0x01
	ReadDiscreteInputs         byte = 0x02
	ReadHoldingRegisters       byte = 0x03
	ReadInputRegisters         byte = 0x04
	WriteSingleCoil            byte = 0x05
	WriteSingleRegister        byte = 0x06
	ReadExceptionStatus        byte = 0x07
	Diagnostics                byte = 0x08
	GetCommEventCounter        byte = 0x0B
	GetCommEventLog            byte = 0x0C
	WriteMultipleCoils         byte = 0x0F
	WriteMultipleRegisters     byte = 0x10
	ReportServerID             byte = 0x11
	ReadFileRecord             byte = 0x14
	WriteFileRecord            byte = 0x15
	MaskWriteRegister          byte = 0x16
	ReadWriteMultipleRegisters byte = 0x17
	ReadFIFOQueue              byte = 0x18
	EncapsulatedInterface      byte = 0x2B
	MEIReadDeviceID            byte = 0x0E // MEI type under EncapsulatedInterface
)

// Exception is a Modbus exception code: a value a device answers with,
// not a transport failure.
type Exception byte

// Exception codes from the Modbus Application Protocol, section 7.
const (
	IllegalFunction         Exception = 0x01
	IllegalDataAddress      Exception = 0x02
	IllegalDataValue        Exception = 0x03
	ServerDeviceFailure     Exception = 0x04
	Acknowledge             Exception = 0x05
	ServerDeviceBusy        Exception = 0x06
	MemoryParityError       Exception = 0x08
	GatewayPathUnavailable  Exception = 0x0A
	GatewayTargetNoResponse Exception = 0x0B
)

var exceptionNames = map[Exception]string{
	IllegalFunction:         "illegal function",
	IllegalDataAddress:      "illegal data address",
	IllegalDataValue:        "illegal data value",
	ServerDeviceFailure:     "server device failure",
	Acknowledge:             "acknowledge",
	ServerDeviceBusy:        "server device busy",
	MemoryParityError:       "memory parity error",
	GatewayPathUnavailable:  "gateway path unavailable",
	GatewayTargetNoResponse: "gateway target device failed to respond",
}

func (e Exception) String() string {
	if s, ok := exceptionNames[e]; ok {
		return s
	}
	return fmt.Sprintf("exception %#02x", byte(e))
}

// Error makes an Exception usable as an error where a caller wants one;
// errors.As finds it.
func (e Exception) Error() string { return "modbus: " + e.String() }

// AppendException appends the exception response PDU for function code fc.
func AppendException(dst []byte, fc byte, e Exception) []byte {
	return append(dst, fc|exceptFlag, byte(e))
}

// IsException reports whether a response PDU is an exception response,
// and if so which.
func IsException(p []byte) (Exception, bool) {
	if len(p) >= 2 && p[0]&exceptFlag != 0 {
		return Exception(p[1]), true
	}
	return 0, false
}

// Answers reports whether response function code got belongs to a request
// with function code want: the same code, or the same code flagged as an
// exception.
func Answers(want, got byte) bool {
	return got == want || got == want|exceptFlag
}

// IsWrite reports whether a function code changes a device's state, the
// only kind of request that may be broadcast.
func IsWrite(fc byte) bool {
	switch fc {
	case WriteSingleCoil, WriteSingleRegister, WriteMultipleCoils,
		WriteMultipleRegisters, WriteFileRecord, MaskWriteRegister,
		ReadWriteMultipleRegisters:
		return true
	}
	return false
}

// ParseRead returns what a read request (FC 1, 2, 3 or 4) asks for: its
// function, first address and quantity. ok is false for any other
// request, or one of the wrong length.
func ParseRead(p []byte) (fc byte, addr, qty uint16, ok bool) {
	if len(p) != 5 || p[0] < ReadCoils || p[0] > ReadInputRegisters {
		return 0, 0, 0, false
	}
	return p[0], uint16(p[1])<<8 | uint16(p[2]), uint16(p[3])<<8 | uint16(p[4]), true
}

// ReadOnly reports whether request PDU p only reads: a device's data and
// its behaviour are the same after it as before. It is a closed list of
// public function codes: 1, 2, 3, 4, 7, 11, 12, 17, 20, 24, and 43 with
// MEI type 14 (read device identification). Everything else may change
// a device: writes; diagnostics (FC 08), whose sub-functions restart a
// device's communications, clear its counters or force it into
// listen-only mode; FC 43 with another MEI type (CANopen general
// reference, 13, can write); user-defined and unassigned codes, which
// only their device understands.
func ReadOnly(p []byte) bool {
	if len(p) == 0 {
		return false
	}
	switch p[0] {
	case ReadCoils, ReadDiscreteInputs, ReadHoldingRegisters, ReadInputRegisters,
		ReadExceptionStatus, GetCommEventCounter, GetCommEventLog, ReportServerID,
		ReadFileRecord, ReadFIFOQueue:
		return true
	case EncapsulatedInterface:
		return len(p) >= 2 && p[1] == MEIReadDeviceID
	}
	return false
}

// Written returns the addresses a request may change: [addr, addr+qty)
// for the writes whose range the PDU says (FC 5, 6, 15, 16, 22, and the
// write part of 23), with all false; all is true for any other request
// that is not ReadOnly (its effect is unknown: assume everything).
// A read-only request writes nothing (qty 0).
func Written(p []byte) (addr, qty uint16, all bool) {
	if len(p) == 0 || ReadOnly(p) {
		return 0, 0, false
	}
	u16 := func(i int) uint16 { return uint16(p[i])<<8 | uint16(p[i+1]) }
	switch {
	case (p[0] == WriteSingleCoil || p[0] == WriteSingleRegister || p[0] == MaskWriteRegister) && len(p) >= 3:
		return u16(1), 1, false
	case (p[0] == WriteMultipleCoils || p[0] == WriteMultipleRegisters) && len(p) >= 5:
		return u16(1), u16(3), false
	case p[0] == ReadWriteMultipleRegisters && len(p) >= 9:
		return u16(5), u16(7), false
	}
	return 0, 0, true
}
