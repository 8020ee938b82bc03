package serialport

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// TestRS485Struct: what the kernel gets for each setting (struct
// serial_rs485: flags, the delays in milliseconds, padding).
func TestRS485Struct(t *testing.T) {
	for _, tc := range []struct {
		r    RS485
		want [8]uint32
	}{
		{RS485{}, [8]uint32{rs485Enabled | rs485RTSOnSend}},
		{RS485{RTSLowOnSend: true}, [8]uint32{rs485Enabled | rs485RTSAfterSend}},
		{RS485{DelayBefore: 1500 * time.Microsecond, DelayAfter: 2 * time.Millisecond}, [8]uint32{1 | 2, 2, 2}},
	} {
		if got := tc.r.kernel(); got != tc.want {
			t.Errorf("%+v: %v, want %v", tc.r, got, tc.want)
		}
	}
	if rs485Enabled != 1 || rs485RTSOnSend != 2 || rs485RTSAfterSend != 4 {
		t.Error("the flags are not linux/serial.h's SER_RS485_*")
	}
}

// TestRS485Open: Open hands the kernel the struct through its seam; a
// pseudo-terminal, which has no RS-485 mode, refuses it for real, and the
// error names rs485 and the port.
func TestRS485Open(t *testing.T) {
	p, err := NewPty()
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	s := Settings{Baud: 19200, DataBits: 8, Parity: 'E', StopBits: 1,
		RS485: &RS485{RTSLowOnSend: true, DelayAfter: 3 * time.Millisecond}}

	real := setRS485
	var got [8]uint32
	setRS485 = func(fd int, k [8]uint32) error { got = k; return nil }
	port, err := Open(p.Path, s)
	setRS485 = real
	if err != nil {
		t.Fatal(err)
	}
	port.Close()
	if want := [8]uint32{rs485Enabled | rs485RTSAfterSend, 0, 3}; got != want {
		t.Fatalf("the kernel would get %v, want %v", got, want)
	}

	_, err = Open(p.Path, s)
	if !errors.Is(err, ErrRS485) || !strings.Contains(err.Error(), "rs485: "+p.Path) {
		t.Fatalf("rs485 on a pty: %v", err)
	}
}
