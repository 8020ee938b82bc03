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
