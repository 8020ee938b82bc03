// Package crc implements CRC-16/MODBUS, the checksum that ends every
// Modbus RTU frame: reflected polynomial 0xA001, initial value 0xFFFF,
// no final xor, sent on the wire low byte first.
package crc

// Size is the number of bytes a CRC occupies at the end of an RTU frame.
const Size = 2

// Init is the value a CRC computation starts from.
const Init uint16 = 0xFFFF

// poly is 0x8005 bit-reversed.
const poly uint16 = 0xA001

var table = makeTable()

func makeTable() (t [256]uint16) {
	for i := range t {
		c := uint16(i)
		for range 8 {
			if c&1 != 0 {
				c = c>>1 ^ poly
			} else {
				c >>= 1
			}
		}
		t[i] = c
	}
	return t
}

// Update returns the result of adding the bytes in p to crc.
// Start a new computation from Init.
func Update(crc uint16, p []byte) uint16 {
	for _, b := range p {
		crc = crc>>8 ^ table[byte(crc)^b]
	}
	return crc
}

// Checksum returns the CRC-16/MODBUS of p.
func Checksum(p []byte) uint16 {
	return Update(Init, p)
}

// Append appends crc to b low byte first, as an RTU frame carries it.
func Append(b []byte, crc uint16) []byte {
	return append(b, byte(crc), byte(crc>>8))
}

// Valid reports whether frame ends in the CRC of the bytes before it.
// A frame shorter than Size+1 bytes is never valid.
func Valid(frame []byte) bool {
	n := len(frame) - Size
	if n < 1 {
		return false
	}
	return Checksum(frame[:n]) == uint16(frame[n])|uint16(frame[n+1])<<8
}
