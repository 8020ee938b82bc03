// Package validate answers, at once, the requests that no device can use, so
// that they never take a serial line's time: function code 0 or 128-255
// (exception 01), and requests of a public function code whose length or
// quantities are outside what the Modbus Application Protocol allows
// (exception 03). It comes first in the chain, before the access rules:
// a request is judged by what it is, and one whose length the spec fixes
// cannot carry a second frame to the line behind it. User-defined and
// unassigned function codes pass through untouched: only their device
// knows what they mean.
package validate

import (
	"context"
	"encoding/binary"
	"errors"
	"sync/atomic"

	"github.com/mcpgw/mcpgw/pkg/pdu"
	"github.com/mcpgw/mcpgw/pkg/request"
)

// Request returns the exception a request PDU must be answered with
// before it reaches a line, or 0 if it may go on. It is a pure function
// of the bytes. A public function code's request must have the length
// pdu.RequestLen gives it (the table the serial line and every other
// reader of requests share, so that no request can carry a second frame
// behind it) and quantities within the spec's limits.
func Request(p []byte) pdu.Exception {
	if len(p) == 0 || p[0] == 0 || p[0] >= 0x80 {
		return pdu.IllegalFunction
	}
	n, err := pdu.RequestLen(p)
	switch {
	case err == nil:
		if n != len(p) {
			return pdu.IllegalDataValue
		}
	case errors.Is(err, pdu.ErrUnknownLength):
		// User-defined and unassigned codes, other MEI types, and
		// return query data: only the device knows; they pass.
		return 0
	default: // too short to tell, or a byte count past the largest PDU
		return pdu.IllegalDataValue
	}
	ok := true
	u16 := func(off int) int { return int(binary.BigEndian.Uint16(p[off:])) }
	// span: addr + qty within the 65536 addresses.
	span := func(addr, qty int) bool { return addr+qty <= 0x10000 }
	switch p[0] {
	case pdu.ReadCoils, pdu.ReadDiscreteInputs:
		ok = between(u16(3), 1, 2000) && span(u16(1), u16(3))
	case pdu.ReadHoldingRegisters, pdu.ReadInputRegisters:
		ok = between(u16(3), 1, 125) && span(u16(1), u16(3))
	case pdu.WriteSingleCoil:
		ok = u16(3) == 0x0000 || u16(3) == 0xFF00
	case pdu.WriteMultipleCoils:
		ok = between(u16(3), 1, 1968) && span(u16(1), u16(3)) && int(p[5]) == (u16(3)+7)/8
	case pdu.WriteMultipleRegisters:
		ok = between(u16(3), 1, 123) && span(u16(1), u16(3)) && int(p[5]) == 2*u16(3)
	case pdu.ReadFileRecord:
		ok = between(int(p[1]), 0x07, 0xF5) && p[1]%7 == 0
	case pdu.WriteFileRecord:
		ok = between(int(p[1]), 0x09, 0xFB)
	case pdu.ReadWriteMultipleRegisters:
		ok = between(u16(3), 1, 125) && span(u16(1), u16(3)) &&
			between(u16(7), 1, 121) && span(u16(5), u16(7)) && int(p[9]) == 2*u16(7)
	case pdu.EncapsulatedInterface: // read device identification
		ok = between(int(p[2]), 1, 4)
	}
	if !ok {
		return pdu.IllegalDataValue
	}
	return 0
}

func between(v, lo, hi int) bool { return v >= lo && v <= hi }

// Handler answers requests that Request rejects and hands the others to
// Next. A rejected broadcast gets no answer, as a broadcast never does;
// so is a broadcast read (it asks for an answer no device gives to a
// broadcast): it is dropped.
type Handler struct {
	Next     request.Handler
	rejected atomic.Uint64
}

// New returns a Handler; put it in the chain with Middleware.
func New() *Handler { return &Handler{} }

// Middleware puts h in front of next, in the chain.
func (h *Handler) Middleware(next request.Handler) request.Handler {
	h.Next = next
	return h
}

// Rejected returns how many requests were answered without reaching a
// line.
func (h *Handler) Rejected() uint64 { return h.rejected.Load() }

// ServeModbus implements request.Handler.
func (h *Handler) ServeModbus(ctx context.Context, tr *request.Request, dst []byte) []byte {
	e := Request(tr.PDU)
	if e == 0 && tr.Unit == pdu.Broadcast && (pdu.ReadOnly(tr.PDU) || pdu.IsReturnQueryData(tr.PDU)) {
		e = pdu.IllegalFunction // a read no device answers when broadcast: dropped
	}
	if e == 0 {
		return h.Next.ServeModbus(ctx, tr, dst)
	}
	h.rejected.Add(1)
	return tr.Refuse(dst, request.Rejected, e)
}
