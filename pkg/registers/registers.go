// Package registers is a Modbus device model: coils, discrete inputs,
// holding and input registers, with a handler that answers request PDUs
// from it. It does no I/O; mcpgw sim puts it behind a serial line.
package registers

import (
	"encoding/binary"
	"sync"

	"github.com/mcpgw/mcpgw/pkg/pdu"
)

// Quantity limits from the Modbus Application Protocol v1.1b3.
const (
	MaxReadBits       = 2000
	MaxReadRegisters  = 125
	MaxWriteBits      = 1968
	MaxWriteRegisters = 123
	MaxRWWrite        = 121
)

// Identity is what a device reports through FC 17 (report server id) and
// FC 43/14 (read device identification).
type Identity struct {
	VendorName, ProductCode, Revision          string // basic objects 0..2
	VendorURL, ProductName, ModelName, AppName string // regular objects 3..6
	ServerID                                   byte   // first byte of the FC 17 answer
}

// Model is one device's data. Its methods are safe for concurrent use.
type Model struct {
	mu       sync.Mutex
	Coils    []bool
	Discrete []bool
	Holding  []uint16
	Input    []uint16
	ID       Identity
}

// New returns a model with n of each kind of object, all zero.
func New(n int) *Model {
	return &Model{
		Coils:    make([]bool, n),
		Discrete: make([]bool, n),
		Holding:  make([]uint16, n),
		Input:    make([]uint16, n),
		ID: Identity{
			VendorName: "mcpgw", ProductCode: "SIM", Revision: "1.0",
			VendorURL: "https://example.invalid/mcpgw", ProductName: "mcpgw simulated device",
			ModelName: "sim", AppName: "mcpgw sim", ServerID: 0x01,
		},
	}
}

// Pattern fills a model with values derived from unit and address, so that
// a test can tell from any value which unit and address it came from:
// holding[i] = unit*1000 + i, input[i] = unit*1000 + i + 500,
// coils[i] = (i+unit)%3 == 0, discrete[i] = (i+unit)%5 == 0 (all mod 2^16).
func (m *Model) Pattern(unit byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for i := range m.Holding {
		m.Holding[i] = PatternHolding(unit, i)
	}
	for i := range m.Input {
		m.Input[i] = PatternHolding(unit, i) + 500
	}
	for i := range m.Coils {
		m.Coils[i] = (i+int(unit))%3 == 0
	}
	for i := range m.Discrete {
		m.Discrete[i] = (i+int(unit))%5 == 0
	}
}

// PatternHolding is the value Pattern puts in holding register addr.
func PatternHolding(unit byte, addr int) uint16 { return uint16(int(unit)*1000 + addr) }

// Lock and Unlock let a caller read or change the tables consistently.
func (m *Model) Lock()   { m.mu.Lock() }
func (m *Model) Unlock() { m.mu.Unlock() }

// Handle answers the request PDU req, appending the response PDU (normal
// or exception) to dst. Quantity and address range are checked before any
// data is touched, so a refused request changes nothing.
func (m *Model) Handle(req, dst []byte) []byte {
	if len(req) == 0 {
		return pdu.AppendException(dst, 0, pdu.IllegalFunction)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	resp, exc := m.handle(req, dst)
	if exc != 0 {
		return pdu.AppendException(dst, req[0], exc)
	}
	return resp
}

func u16(b []byte) int { return int(binary.BigEndian.Uint16(b)) }

// checkRange validates a quantity against 1..limit and the address span
// against a table of size n: exception 03 for the first, 02 for the second.
func checkRange(addr, qty, limit, n int) pdu.Exception {
	if qty < 1 || qty > limit {
		return pdu.IllegalDataValue
	}
	if addr+qty > n {
		return pdu.IllegalDataAddress
	}
	return 0
}

func (m *Model) handle(req, dst []byte) ([]byte, pdu.Exception) {
	fc := req[0]
	switch fc {
	case pdu.ReadCoils, pdu.ReadDiscreteInputs:
		if len(req) != 5 {
			return nil, pdu.IllegalDataValue
		}
		bits := m.Coils
		if fc == pdu.ReadDiscreteInputs {
			bits = m.Discrete
		}
		addr, qty := u16(req[1:]), u16(req[3:])
		if e := checkRange(addr, qty, MaxReadBits, len(bits)); e != 0 {
			return nil, e
		}
		dst = append(dst, fc, byte((qty+7)/8))
		return appendBits(dst, bits[addr:addr+qty]), 0

	case pdu.ReadHoldingRegisters, pdu.ReadInputRegisters:
		if len(req) != 5 {
			return nil, pdu.IllegalDataValue
		}
		regs := m.Holding
		if fc == pdu.ReadInputRegisters {
			regs = m.Input
		}
		addr, qty := u16(req[1:]), u16(req[3:])
		if e := checkRange(addr, qty, MaxReadRegisters, len(regs)); e != 0 {
			return nil, e
		}
		dst = append(dst, fc, byte(2*qty))
		return appendRegs(dst, regs[addr:addr+qty]), 0

	case pdu.WriteSingleCoil:
		if len(req) != 5 {
			return nil, pdu.IllegalDataValue
		}
		addr, v := u16(req[1:]), u16(req[3:])
		if v != 0x0000 && v != 0xFF00 {
			return nil, pdu.IllegalDataValue
		}
		if addr >= len(m.Coils) {
			return nil, pdu.IllegalDataAddress
		}
		m.Coils[addr] = v == 0xFF00
		return append(dst, req...), 0

	case pdu.WriteSingleRegister:
		if len(req) != 5 {
			return nil, pdu.IllegalDataValue
		}
		addr := u16(req[1:])
		if addr >= len(m.Holding) {
			return nil, pdu.IllegalDataAddress
		}
		m.Holding[addr] = uint16(u16(req[3:]))
		return append(dst, req...), 0

	case pdu.WriteMultipleCoils:
		if len(req) < 6 {
			return nil, pdu.IllegalDataValue
		}
		addr, qty, bc := u16(req[1:]), u16(req[3:]), int(req[5])
		if qty < 1 || qty > MaxWriteBits || bc != (qty+7)/8 || len(req) != 6+bc {
			return nil, pdu.IllegalDataValue
		}
		if addr+qty > len(m.Coils) {
			return nil, pdu.IllegalDataAddress
		}
		for i := range qty {
			m.Coils[addr+i] = req[6+i/8]&(1<<(i%8)) != 0
		}
		return append(dst, req[:5]...), 0

	case pdu.WriteMultipleRegisters:
		if len(req) < 6 {
			return nil, pdu.IllegalDataValue
		}
		addr, qty, bc := u16(req[1:]), u16(req[3:]), int(req[5])
		if qty < 1 || qty > MaxWriteRegisters || bc != 2*qty || len(req) != 6+bc {
			return nil, pdu.IllegalDataValue
		}
		if addr+qty > len(m.Holding) {
			return nil, pdu.IllegalDataAddress
		}
		for i := range qty {
			m.Holding[addr+i] = uint16(u16(req[6+2*i:]))
		}
		return append(dst, req[:5]...), 0

	case pdu.MaskWriteRegister:
		if len(req) != 7 {
			return nil, pdu.IllegalDataValue
		}
		addr := u16(req[1:])
		if addr >= len(m.Holding) {
			return nil, pdu.IllegalDataAddress
		}
		and, or := uint16(u16(req[3:])), uint16(u16(req[5:]))
		m.Holding[addr] = m.Holding[addr]&and | or&^and
		return append(dst, req...), 0

	case pdu.ReadWriteMultipleRegisters:
		if len(req) < 10 {
			return nil, pdu.IllegalDataValue
		}
		raddr, rqty := u16(req[1:]), u16(req[3:])
		waddr, wqty, bc := u16(req[5:]), u16(req[7:]), int(req[9])
		if rqty < 1 || rqty > MaxReadRegisters || wqty < 1 || wqty > MaxRWWrite ||
			bc != 2*wqty || len(req) != 10+bc {
			return nil, pdu.IllegalDataValue
		}
		if raddr+rqty > len(m.Holding) || waddr+wqty > len(m.Holding) {
			return nil, pdu.IllegalDataAddress
		}
		// The write happens before the read (Application Protocol 6.17).
		for i := range wqty {
			m.Holding[waddr+i] = uint16(u16(req[10+2*i:]))
		}
		dst = append(dst, fc, byte(2*rqty))
		return appendRegs(dst, m.Holding[raddr:raddr+rqty]), 0

	case pdu.ReportServerID:
		if len(req) != 1 {
			return nil, pdu.IllegalDataValue
		}
		name := m.ID.ProductName
		dst = append(dst, fc, byte(2+len(name)), m.ID.ServerID, 0xFF)
		return append(dst, name...), 0

	case pdu.EncapsulatedInterface:
		if len(req) >= 2 && req[1] == pdu.MEIReadDeviceID {
			return m.deviceID(req, dst)
		}

	case pdu.Diagnostics:
		// Return query data only: the request looped back, whatever
		// its length. The model keeps no counters and has no
		// listen-only mode, so the other sub-functions are refused.
		// A request longer than a PDU can be has no echo that fits.
		if len(req) > pdu.MaxSize {
			return nil, pdu.IllegalDataValue
		}
		if pdu.IsReturnQueryData(req) {
			return append(dst, req...), 0
		}
	}
	return nil, pdu.IllegalFunction
}

// Device identification object ids and access codes.
const (
	idBasic      = 0x01
	idRegular    = 0x02
	idExtended   = 0x03
	idIndividual = 0x04
	conformity   = 0x82 // regular identification, stream and individual access
)

func (m *Model) deviceID(req, dst []byte) ([]byte, pdu.Exception) {
	if len(req) != 4 {
		return nil, pdu.IllegalDataValue
	}
	objects := [...]string{m.ID.VendorName, m.ID.ProductCode, m.ID.Revision,
		m.ID.VendorURL, m.ID.ProductName, m.ID.ModelName, m.ID.AppName}
	code, id := req[2], int(req[3])
	first, last := id, 0
	switch code {
	case idBasic:
		last = 2
	case idRegular, idExtended:
		last = len(objects) - 1
	case idIndividual:
		if id >= len(objects) {
			return nil, pdu.IllegalDataAddress
		}
		last = id
	default:
		return nil, pdu.IllegalDataValue
	}
	if first > last {
		first = 0 // an unknown starting object restarts the stream (6.21)
	}
	dst = append(dst, pdu.EncapsulatedInterface, pdu.MEIReadDeviceID, code, conformity, 0x00, 0x00, byte(last-first+1))
	for i := first; i <= last; i++ {
		dst = append(dst, byte(i), byte(len(objects[i])))
		dst = append(dst, objects[i]...)
	}
	return dst, 0
}

func appendBits(dst []byte, bits []bool) []byte {
	var cur byte
	for i, b := range bits {
		if b {
			cur |= 1 << (i % 8)
		}
		if i%8 == 7 {
			dst = append(dst, cur)
			cur = 0
		}
	}
	if len(bits)%8 != 0 {
		dst = append(dst, cur)
	}
	return dst
}

func appendRegs(dst []byte, regs []uint16) []byte {
	for _, r := range regs {
		dst = binary.BigEndian.AppendUint16(dst, r)
	}
	return dst
}
