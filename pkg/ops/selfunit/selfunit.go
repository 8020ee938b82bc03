// Package selfunit is the gateway's own unit (server.self_unit, 255 by
// convention: the Modbus TCP specification's "this device", an id no RTU
// device can have): requests to it are answered from the gateway's state,
// never sent to a line, so a SCADA that speaks only Modbus can alarm on a
// dead line or device without Prometheus.
//
// The map, read-only (a write gets exception 01; an address beyond it
// 02):
//
//	input registers (FC 4; FC 3 reads the same)
//	  0-1    uptime in seconds, 32 bits, high word first
//	  2-9    the version, ASCII, two characters a register, NUL-padded
//	  10     the number of lines
//	  20+10i line i (in the configuration's order):
//	         +0 1 up, 0 down
//	         +1 why it is down: 0 up, 1 not opened yet, 2 the device is
//	            missing, 3 permission denied, 4 RS-485 mode refused,
//	            5 the connection failed (tcp://, modbus+tcp://), 6 another
//	            I/O error
//	         +2-3 transactions, +4-5 failed transactions (no answer after
//	            every attempt), +6-7 CRC errors: 32 bits each, high word
//	            first, wrapping
//	         +8 requests waiting in its queue
//	discrete inputs (FC 2; FC 1 reads the same)
//	  u      1 while unit u (1-247) answers (online), 0 while it is
//	         offline, not heard yet, or on no line
package selfunit

import (
	"context"
	"encoding/binary"
	"sync/atomic"
	"time"

	"github.com/mcpgw/mcpgw/pkg/pdu"
	"github.com/mcpgw/mcpgw/pkg/request"
)

// Why a line is down, as register +1 of its block says.
const (
	Up          = 0
	NotOpened   = 1
	Missing     = 2
	Permission  = 3
	RS485       = 4
	Unreachable = 5
	IOError     = 6
)

// Line is what the map shows of a line.
type Line struct {
	Up           bool
	Why          uint16 // Up ... IOError
	Transactions uint64
	Failures     uint64
	CRCErrors    uint64
	Queued       int
}

// Sources are where the handler reads the gateway's state.
type Sources struct {
	Version string
	Started time.Time
	Lines   func() []Line
	Online  func(unit byte) bool
}

// The map's layout.
const (
	lineBase   = 20
	lineBlock  = 10
	maxLines   = (65536 - lineBase) / lineBlock
	unitInputs = pdu.MaxUnit + 1 // discrete inputs 0..247
)

// Handler answers the gateway's own unit.
type Handler struct {
	src  Sources
	unit atomic.Uint32 // 0: none
}

// New returns a handler answering unit (0: none) from src.
func New(unit byte, src Sources) *Handler {
	h := &Handler{src: src}
	h.unit.Store(uint32(unit))
	return h
}

// SetUnit changes the unit it answers (a reload); 0: none.
func (h *Handler) SetUnit(unit byte) { h.unit.Store(uint32(unit)) }

// Middleware answers requests to the gateway's unit and passes the rest
// on.
func (h *Handler) Middleware(next request.Handler) request.Handler {
	return request.HandlerFunc(func(ctx context.Context, tr *request.Request, dst []byte) []byte {
		if u := h.unit.Load(); u == 0 || uint32(tr.Unit) != u {
			return next.ServeModbus(ctx, tr, dst)
		}
		return h.answer(tr.PDU, dst)
	})
}

// answer answers one request PDU from the gateway's state.
func (h *Handler) answer(req, dst []byte) []byte {
	fc := req[0]
	if len(req) != 5 {
		return pdu.AppendException(dst, fc, pdu.IllegalFunction)
	}
	addr, qty := int(binary.BigEndian.Uint16(req[1:])), int(binary.BigEndian.Uint16(req[3:]))
	switch fc {
	case pdu.ReadHoldingRegisters, pdu.ReadInputRegisters:
		regs := h.registers()
		if qty < 1 || qty > 125 || addr+qty > len(regs) {
			return pdu.AppendException(dst, fc, pdu.IllegalDataAddress)
		}
		dst = append(dst, fc, byte(2*qty))
		for _, r := range regs[addr : addr+qty] {
			dst = binary.BigEndian.AppendUint16(dst, r)
		}
		return dst
	case pdu.ReadCoils, pdu.ReadDiscreteInputs:
		if qty < 1 || qty > 2000 || addr+qty > unitInputs {
			return pdu.AppendException(dst, fc, pdu.IllegalDataAddress)
		}
		n := (qty + 7) / 8
		dst = append(dst, fc, byte(n))
		at := len(dst)
		dst = append(dst, make([]byte, n)...)
		for i := range qty {
			if u := addr + i; u >= 1 && h.src.Online != nil && h.src.Online(byte(u)) {
				dst[at+i/8] |= 1 << (i % 8)
			}
		}
		return dst
	}
	return pdu.AppendException(dst, fc, pdu.IllegalFunction) // read-only: no writes, nothing else
}

// registers is the input register map now.
func (h *Handler) registers() []uint16 {
	var lines []Line
	if h.src.Lines != nil {
		lines = h.src.Lines()
	}
	lines = lines[:min(len(lines), maxLines)]
	regs := make([]uint16, lineBase+lineBlock*len(lines))
	up := uint32(time.Since(h.src.Started) / time.Second)
	regs[0], regs[1] = uint16(up>>16), uint16(up)
	var v [16]byte
	copy(v[:], h.src.Version)
	for i := range 8 {
		regs[2+i] = binary.BigEndian.Uint16(v[2*i:])
	}
	regs[10] = uint16(len(lines))
	for i, l := range lines {
		b := regs[lineBase+lineBlock*i:]
		if l.Up {
			b[0] = 1
		} else {
			b[1] = l.Why
		}
		put32 := func(at int, x uint64) { b[at], b[at+1] = uint16(x>>16), uint16(x) }
		put32(2, l.Transactions)
		put32(4, l.Failures)
		put32(6, l.CRCErrors)
		b[8] = uint16(min(l.Queued, 65535))
	}
	return regs
}
