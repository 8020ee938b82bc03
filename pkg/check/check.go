// Package check answers, at once, the requests that no device can use, so
// that they never take a serial line's time: function code 0 or 128-255
// (exception 01), and requests of a public function code whose length or
// quantities are outside what the Modbus Application Protocol allows
// (exception 03). User-defined and unassigned function codes pass
// through untouched: only their device knows what they mean.
package check

import (
	"context"
	"encoding/binary"
	"sync/atomic"

	"github.com/mcpgw/mcpgw/pkg/pdu"
	"github.com/mcpgw/mcpgw/pkg/tcp"
)

// Request returns the exception a request PDU must be answered with
// before it reaches a line, or 0 if it may go on. It is a pure function
// of the bytes.
func Request(p []byte) pdu.Exception {
	if len(p) == 0 || p[0] == 0 || p[0] >= 0x80 {
		return pdu.IllegalFunction
	}
	ok := true
	u16 := func(off int) int { return int(binary.BigEndian.Uint16(p[off:])) }
	// span: addr + qty within the 65536 addresses.
	span := func(addr, qty int) bool { return addr+qty <= 0x10000 }
	switch p[0] {
	case pdu.ReadCoils, pdu.ReadDiscreteInputs:
		ok = len(p) == 5 && between(u16(3), 1, 2000) && span(u16(1), u16(3))
	case pdu.ReadHoldingRegisters, pdu.ReadInputRegisters:
		ok = len(p) == 5 && between(u16(3), 1, 125) && span(u16(1), u16(3))
	case pdu.WriteSingleCoil:
		ok = len(p) == 5 && (u16(3) == 0x0000 || u16(3) == 0xFF00)
	case pdu.WriteSingleRegister:
		ok = len(p) == 5
	case pdu.ReadExceptionStatus, pdu.GetCommEventCounter, pdu.GetCommEventLog, pdu.ReportServerID:
		ok = len(p) == 1
	case pdu.Diagnostics:
		ok = len(p) >= 3 // a sub-function, then data whose length depends on it
	case pdu.WriteMultipleCoils:
		ok = len(p) >= 6 && between(u16(3), 1, 1968) && span(u16(1), u16(3)) &&
			int(p[5]) == (u16(3)+7)/8 && len(p) == 6+int(p[5])
	case pdu.WriteMultipleRegisters:
		ok = len(p) >= 6 && between(u16(3), 1, 123) && span(u16(1), u16(3)) &&
			int(p[5]) == 2*u16(3) && len(p) == 6+int(p[5])
	case pdu.ReadFileRecord:
		ok = len(p) >= 2 && between(int(p[1]), 0x07, 0xF5) && p[1]%7 == 0 && len(p) == 2+int(p[1])
	case pdu.WriteFileRecord:
		ok = len(p) >= 2 && between(int(p[1]), 0x09, 0xFB) && len(p) == 2+int(p[1])
	case pdu.MaskWriteRegister:
		ok = len(p) == 7
	case pdu.ReadWriteMultipleRegisters:
		ok = len(p) >= 10 && between(u16(3), 1, 125) && span(u16(1), u16(3)) &&
			between(u16(7), 1, 121) && span(u16(5), u16(7)) &&
			int(p[9]) == 2*u16(7) && len(p) == 10+int(p[9])
	case pdu.ReadFIFOQueue:
		ok = len(p) == 3
	case pdu.EncapsulatedInterface:
		// Read device identification has a fixed request; other MEI types
		// pass through.
		ok = len(p) >= 2 && (p[1] != pdu.MEIReadDeviceID || len(p) == 4 && between(int(p[2]), 1, 4))
	}
	if !ok {
		return pdu.IllegalDataValue
	}
	return 0
}

func between(v, lo, hi int) bool { return v >= lo && v <= hi }

// Handler answers requests that Request rejects and hands the others to
// Next. A rejected broadcast gets no answer, as a broadcast never does.
type Handler struct {
	Next     tcp.Handler
	rejected atomic.Uint64
}

// Rejected returns how many requests were answered without reaching a
// line.
func (h *Handler) Rejected() uint64 { return h.rejected.Load() }

// ServeModbus implements tcp.Handler.
func (h *Handler) ServeModbus(ctx context.Context, tr *tcp.Request, dst []byte) []byte {
	e := Request(tr.PDU)
	if e == 0 {
		return h.Next.ServeModbus(ctx, tr, dst)
	}
	h.rejected.Add(1)
	tr.Outcome = "rejected"
	if tr.Unit == pdu.Broadcast {
		return nil
	}
	return pdu.AppendException(dst, tr.PDU[0], e)
}
