package pdu

import (
	"errors"
	"testing"
)

func TestException(t *testing.T) {
	// Modbus Application Protocol, section 7: read input registers answered
	// with illegal data address is 84 02.
	p := AppendException(nil, ReadInputRegisters, IllegalDataAddress)
	if string(p) != "\x84\x02" {
		t.Fatalf("AppendException = % X, want 84 02", p)
	}
	e, ok := IsException(p)
	if !ok || e != IllegalDataAddress {
		t.Fatalf("IsException(% X) = %v, %v", p, e, ok)
	}
	if _, ok := IsException([]byte{0x03, 0x02, 0x00, 0x01}); ok {
		t.Fatal("a normal response read as an exception")
	}
	if _, ok := IsException([]byte{0x83}); ok {
		t.Fatal("a truncated exception read as one")
	}
	var target Exception
	if err := error(GatewayTargetNoResponse); !errors.As(err, &target) || target != 0x0B {
		t.Fatalf("errors.As failed: %v", target)
	}
	if got := Exception(0x42).String(); got != "exception 0x42" {
		t.Fatalf("unknown exception string %q", got)
	}
}

func TestAnswers(t *testing.T) {
	tests := []struct {
		want, got byte
		ok        bool
	}{
		{0x03, 0x03, true}, {0x03, 0x83, true}, {0x03, 0x04, false},
		{0x03, 0x84, false}, {0x41, 0xC1, true},
	}
	for _, tt := range tests {
		if Answers(tt.want, tt.got) != tt.ok {
			t.Errorf("Answers(%#x, %#x) != %v", tt.want, tt.got, tt.ok)
		}
	}
}

func TestParseReadAndWritten(t *testing.T) {
	if fc, addr, qty, ok := ParseRead([]byte{0x03, 0x00, 0x6B, 0x00, 0x03}); !ok || fc != 3 || addr != 0x6B || qty != 3 {
		t.Fatalf("spec FC 03 read: %d %d %d %v", fc, addr, qty, ok)
	}
	for _, p := range [][]byte{{0x05, 0, 1, 0xFF, 0}, {0x03, 0, 1, 0}, {0x17, 0, 1, 0, 1, 0, 2, 0, 1, 2, 0, 1}} {
		if _, _, _, ok := ParseRead(p); ok {
			t.Errorf("% X parsed as a read", p)
		}
	}
	for _, tc := range []struct {
		p         []byte
		addr, qty uint16
		all       bool
	}{
		{[]byte{0x03, 0, 1, 0, 2}, 0, 0, false},
		{[]byte{0x2B, 0x0E, 1, 0}, 0, 0, false},
		{[]byte{0x05, 0x00, 0xAC, 0xFF, 0x00}, 0xAC, 1, false},                                                          // spec 6.5
		{[]byte{0x06, 0x00, 0x01, 0x00, 0x03}, 1, 1, false},                                                             // spec 6.6
		{[]byte{0x0F, 0x00, 0x13, 0x00, 0x0A, 0x02, 0xCD, 0x01}, 0x13, 10, false},                                       // spec 6.11
		{[]byte{0x10, 0x00, 0x01, 0x00, 0x02, 0x04, 0x00, 0x0A, 0x01, 0x02}, 1, 2, false},                               // spec 6.12
		{[]byte{0x16, 0x00, 0x04, 0x00, 0xF2, 0x00, 0x25}, 4, 1, false},                                                 // spec 6.16
		{[]byte{0x17, 0x00, 0x03, 0x00, 0x06, 0x00, 0x0E, 0x00, 0x03, 0x06, 0, 0xFF, 0, 0xFF, 0, 0xFF}, 0x0E, 3, false}, // spec 6.17
		{[]byte{0x08, 0x00, 0x01, 0x00, 0x00}, 0, 0, true},
		{[]byte{0x41, 1, 2}, 0, 0, true},
		{[]byte{0x2B, 0x0D, 0, 1, 2}, 0, 0, true}, // CANopen general reference can write
	} {
		addr, qty, all := Written(tc.p)
		if addr != tc.addr || qty != tc.qty || all != tc.all {
			t.Errorf("Written(% X) = %d %d %v, want %d %d %v", tc.p, addr, qty, all, tc.addr, tc.qty, tc.all)
		}
	}
}

// FuzzWritten: Written and ParseRead take any bytes without a panic; a
// read, or any read-only code, writes nothing; a range is never "all".
func FuzzWritten(f *testing.F) {
	f.Add([]byte{0x10, 0x00, 0x01, 0x00, 0x02, 0x04, 0x00, 0x0A, 0x01, 0x02})
	f.Add([]byte{0x03, 0x00, 0x6B, 0x00, 0x03})
	f.Add([]byte{0x17, 0x00, 0x03, 0x00, 0x06, 0x00, 0x0E, 0x00, 0x03, 0x06, 0, 0xFF, 0, 0xFF, 0, 0xFF})
	f.Fuzz(func(t *testing.T, p []byte) {
		_, qty, all := Written(p)
		if all && qty != 0 {
			t.Fatalf("% X: a range and all", p)
		}
		_, _, _, read := ParseRead(p)
		if (read || ReadOnly(p)) && (qty != 0 || all) {
			t.Fatalf("% X: a read that writes", p)
		}
	})
}
