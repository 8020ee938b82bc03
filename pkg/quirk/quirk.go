// Package quirk adapts requests to devices that do not follow the
// specification to the letter, as users of every Modbus gateway ask
// for: a read split into several for a device that takes fewer
// registers or bits at once than a client asks for, and a single write
// sent in its multiple form (or the reverse) to a device that lacks one.
//
// Its functions are pure, over PDUs: Split and Join for reads, Rewrite
// and Restore for writes. The router sends the parts and the rewritten
// requests to the line; shared reads, the cache and the log see the
// client's request and its one answer.
package quirk

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/mcpgw/mcpgw/pkg/pdu"
)

// Write is how a device takes single writes.
type Write uint8

const (
	AsIs       Write = iota // as the client sent them
	AsMultiple              // FC 6 as FC 16 of one register; FC 5 as FC 15 of one coil
	AsSingle                // FC 16 of one register as FC 6; FC 15 of one coil as FC 5
)

// Device is one device's quirks; the zero value has none.
type Device struct {
	MaxRegisters int   // registers one read (FC 3, 4) may ask for: 1..125; 0: the spec's 125
	MaxBits      int   // bits one read (FC 1, 2) may ask for: 1..2000; 0: the spec's 2000
	Registers    Write // how it takes single register writes (FC 6, FC 16 of one)
	Coils        Write // how it takes single coil writes (FC 5, FC 15 of one)
}

// IsZero reports whether d has no quirk.
func (d Device) IsZero() bool { return d == Device{} }

// readQty returns a read's first address and quantity, and the most
// the device takes at once, if req is a read (FC 1-4) of the right
// length.
func (d Device) readQty(req []byte) (addr, qty, most int, ok bool) {
	if len(req) != 5 {
		return 0, 0, 0, false
	}
	switch req[0] {
	case pdu.ReadCoils, pdu.ReadDiscreteInputs:
		most = d.MaxBits
	case pdu.ReadHoldingRegisters, pdu.ReadInputRegisters:
		most = d.MaxRegisters
	default:
		return 0, 0, 0, false
	}
	return int(binary.BigEndian.Uint16(req[1:])), int(binary.BigEndian.Uint16(req[3:])), most, most > 0
}

// Split returns the reads, in order, that the device takes for read req:
// nil when req is not a read or is within what the device takes. Each
// part asks for at most the device's most, from where the one before
// ended.
func (d Device) Split(req []byte) [][]byte {
	addr, qty, most, ok := d.readQty(req)
	if !ok || qty <= most {
		return nil
	}
	var parts [][]byte
	for off := 0; off < qty; off += most {
		n := min(most, qty-off)
		p := make([]byte, 5)
		p[0] = req[0]
		binary.BigEndian.PutUint16(p[1:], uint16(addr+off))
		binary.BigEndian.PutUint16(p[3:], uint16(n))
		parts = append(parts, p)
	}
	return parts
}

// Join is the answer to read req from the device's normal answers to
// the parts Split gave, in order: the registers one after the other, or
// the bits packed again from the first. Each answer must hold exactly
// its part (the line has checked it against its request).
func (d Device) Join(req []byte, answers [][]byte) ([]byte, error) {
	_, qty, most, ok := d.readQty(req)
	if !ok {
		return nil, errors.New("quirk: not a read the device's quirks split")
	}
	fc := req[0]
	bits := fc == pdu.ReadCoils || fc == pdu.ReadDiscreteInputs
	size := 2 * qty
	if bits {
		size = (qty + 7) / 8
	}
	out := make([]byte, 2+size)
	out[0], out[1] = fc, byte(size)
	if want := (qty + most - 1) / most; len(answers) != want {
		return nil, fmt.Errorf("quirk: %d answers for %d parts", len(answers), want)
	}
	for i, a := range answers {
		at := i * most
		n := min(most, qty-at) // registers or bits in this part
		want := 2 * n
		if bits {
			want = (n + 7) / 8
		}
		if len(a) != 2+want || a[0] != fc || int(a[1]) != want {
			return nil, fmt.Errorf("quirk: part %d: % X is not the answer to a read of %d", i+1, a, n)
		}
		if !bits {
			copy(out[2+2*at:], a[2:])
			continue
		}
		for b := range n {
			if a[2+b/8]>>(b%8)&1 == 1 {
				out[2+(at+b)/8] |= 1 << ((at + b) % 8)
			}
		}
	}
	return out, nil
}

// Rewrite returns the request the device takes for req, and true, when
// the device takes req's single write in the other form: FC 6 as FC 16
// of one register (AsMultiple), FC 16 of one register as FC 6
// (AsSingle), and the same for coils with FC 5 and FC 15. Any other
// request is as it is, and false.
func (d Device) Rewrite(req []byte) ([]byte, bool) {
	switch {
	case len(req) == 5 && req[0] == pdu.WriteSingleRegister && d.Registers == AsMultiple:
		return []byte{pdu.WriteMultipleRegisters, req[1], req[2], 0, 1, 2, req[3], req[4]}, true
	case len(req) == 8 && req[0] == pdu.WriteMultipleRegisters && d.Registers == AsSingle &&
		req[3] == 0 && req[4] == 1 && req[5] == 2:
		return []byte{pdu.WriteSingleRegister, req[1], req[2], req[6], req[7]}, true
	case len(req) == 5 && req[0] == pdu.WriteSingleCoil && d.Coils == AsMultiple &&
		(req[3] == 0xFF || req[3] == 0) && req[4] == 0:
		return []byte{pdu.WriteMultipleCoils, req[1], req[2], 0, 1, 1, req[3] & 1}, true
	case len(req) == 7 && req[0] == pdu.WriteMultipleCoils && d.Coils == AsSingle &&
		req[3] == 0 && req[4] == 1 && req[5] == 1:
		return []byte{pdu.WriteSingleCoil, req[1], req[2], 0xFF * (req[6] & 1), 0}, true
	}
	return req, false
}

// Restore turns the device's answer to Rewrite's request back into the
// answer to the client's req: a normal answer becomes the normal answer
// of req's function code, and an exception keeps its code under req's
// function code. The device's answer has been checked against the
// rewritten request (the line does that), so a normal answer says the
// write was done.
func Restore(req, answer []byte) []byte {
	if e, ok := pdu.IsException(answer); ok {
		return pdu.AppendException(nil, req[0], e)
	}
	switch req[0] {
	case pdu.WriteSingleRegister, pdu.WriteSingleCoil:
		return append([]byte(nil), req...) // the echo of the request
	}
	return append([]byte(nil), req[:5]...) // FC 15, 16: address and quantity
}
