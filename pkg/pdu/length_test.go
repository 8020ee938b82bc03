package pdu

import (
	"errors"
	"testing"
)

// TestRequestLen: each public function code's request length, from the
// Modbus Application Protocol's examples, and what a prefix too short to
// tell asks for.
func TestRequestLen(t *testing.T) {
	for _, tc := range []struct {
		name string
		p    []byte
		n    int
		err  error
	}{
		{"empty", nil, 1, ErrNeedMore},
		{"read holding registers (6.3)", []byte{0x03, 0x00, 0x6B, 0x00, 0x03}, 5, nil},
		{"read coils, just the code", []byte{0x01}, 5, nil},
		{"write single coil (6.5)", []byte{0x05, 0x00, 0xAC, 0xFF, 0x00}, 5, nil},
		{"read exception status (6.7)", []byte{0x07}, 1, nil},
		{"diagnostics, no sub-function yet", []byte{0x08, 0x00}, 3, ErrNeedMore},
		{"diagnostics, return query data (6.8.1)", []byte{0x08, 0x00, 0x00, 0xA5, 0x37}, 0, ErrUnknownLength},
		{"diagnostics, return query data, longer", []byte{0x08, 0x00, 0x00, 1, 2, 3, 4, 5, 6}, 0, ErrUnknownLength},
		{"diagnostics, restart communications", []byte{0x08, 0x00, 0x01, 0x00, 0x00}, 5, nil},
		{"diagnostics, force listen only, any data", []byte{0x08, 0x00, 0x04, 0x00, 0x00, 0x06, 0x00}, 5, nil},
		{"get comm event counter (6.9)", []byte{0x0B}, 1, nil},
		{"write multiple coils (6.11)", []byte{0x0F, 0x00, 0x13, 0x00, 0x0A, 0x02, 0xCD, 0x01}, 8, nil},
		{"write multiple registers, no count yet", []byte{0x10, 0x00, 0x01, 0x00, 0x02}, 6, ErrNeedMore},
		{"write multiple registers (6.12)", []byte{0x10, 0x00, 0x01, 0x00, 0x02, 0x04}, 10, nil},
		{"write multiple registers, count too big", []byte{0x10, 0x00, 0x01, 0x00, 0x02, 0xF8}, 0, ErrTooLong},
		{"read file record (6.14)", []byte{0x14, 0x0E}, 16, nil},
		{"write file record", []byte{0x15}, 2, ErrNeedMore},
		{"mask write register (6.16)", []byte{0x16}, 7, nil},
		{"read/write multiple registers (6.17)", []byte{0x17, 0, 3, 0, 6, 0, 0x0E, 0, 3, 6}, 16, nil},
		{"read FIFO queue (6.18)", []byte{0x18}, 3, nil},
		{"device identification (6.21)", []byte{0x2B, 0x0E, 0x01, 0x00}, 4, nil},
		{"MEI type not yet known", []byte{0x2B}, 2, ErrNeedMore},
		{"CANopen general reference", []byte{0x2B, 0x0D, 1, 2, 3}, 0, ErrUnknownLength},
		{"user-defined 65", []byte{0x41, 1}, 0, ErrUnknownLength},
		{"unassigned 9", []byte{0x09}, 0, ErrUnknownLength},
	} {
		n, err := RequestLen(tc.p)
		if n != tc.n || !errors.Is(err, tc.err) {
			t.Errorf("%s: RequestLen(% X) = %d, %v; want %d, %v", tc.name, tc.p, n, err, tc.n, tc.err)
		}
	}
}

// TestReadOnly: the closed list of codes that cannot change a device.
func TestReadOnly(t *testing.T) {
	reads := map[byte]bool{1: true, 2: true, 3: true, 4: true, 7: true, 11: true, 12: true, 17: true, 20: true, 24: true}
	for fc := range 256 {
		p := []byte{byte(fc), 0, 0, 0, 1}
		if got := ReadOnly(p); got != reads[byte(fc)] {
			t.Errorf("ReadOnly(FC %d) = %v", fc, got)
		}
	}
	for mei := range 256 {
		if got := ReadOnly([]byte{0x2B, byte(mei), 1, 0}); got != (mei == 0x0E) {
			t.Errorf("ReadOnly(FC 43, MEI type %d) = %v", mei, got)
		}
	}
	for _, p := range [][]byte{nil, {0x2B}, {0x08, 0, 0, 0xA5, 0x37}, {0x08, 0, 4, 0, 0}} {
		if ReadOnly(p) {
			t.Errorf("ReadOnly(% X) = true", p)
		}
	}
}

// FuzzRequestLen: any bytes give a length within the PDU's limits or an
// error, and a known length does not depend on bytes past what it read.
func FuzzRequestLen(f *testing.F) {
	f.Add([]byte{0x10, 0x00, 0x01, 0x00, 0x02, 0x04, 0x00, 0x0A, 0x01, 0x02})
	f.Add([]byte{0x08, 0x00, 0x00, 0xA5, 0x37})
	f.Add([]byte{0x2B, 0x0E, 0x01, 0x00})
	f.Fuzz(func(t *testing.T, p []byte) {
		n, err := RequestLen(p)
		switch {
		case err == nil:
			if n < 1 || n > MaxSize {
				t.Fatalf("% X: length %d", p, n)
			}
			if m, err2 := RequestLen(append(p[:len(p):len(p)], 0xEE)); m != n || err2 != nil {
				t.Fatalf("% X: %d, but %d (%v) with a byte more", p, n, m, err2)
			}
		case errors.Is(err, ErrNeedMore):
			if n <= len(p) {
				t.Fatalf("% X: needs %d", p, n)
			}
		case errors.Is(err, ErrUnknownLength), errors.Is(err, ErrTooLong):
		default:
			t.Fatalf("% X: %v", p, err)
		}
	})
}
