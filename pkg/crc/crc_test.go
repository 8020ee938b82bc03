package crc

import (
	"fmt"
	"testing"

	"github.com/mcpgw/mcpgw/internal/specframes"
)

// bitwise is the textbook bit-at-a-time CRC, kept as a reference for the table.
func bitwise(p []byte) uint16 {
	c := uint16(0xFFFF)
	for _, b := range p {
		c ^= uint16(b)
		for range 8 {
			lsb := c & 1
			c >>= 1
			if lsb != 0 {
				c ^= 0xA001
			}
		}
	}
	return c
}

func TestChecksumGolden(t *testing.T) {
	tests := []struct {
		name  string
		input []byte
		want  uint16
	}{
		{"check string", []byte("123456789"), 0x4B37},
		{"empty", nil, 0xFFFF},
		// Modbus over Serial Line v1.02, and MODBUS.md: read 24 holding registers from 0x5000.
		{"spec read request", specframes.MustHex("01 03 50 00 00 18"), 0xC054},
		// Modbus Application Protocol examples sent to unit 0x11.
		{"read coils 0x13 qty 0x25", specframes.MustHex("11 01 00 13 00 25"), 0x840E},
		{"read holding 0x6B qty 3", specframes.MustHex("11 03 00 6B 00 03"), 0x8776},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Checksum(tt.input); got != tt.want {
				t.Errorf("Checksum(% X) = %#04x, want %#04x", tt.input, got, tt.want)
			}
			if got := bitwise(tt.input); got != tt.want {
				t.Errorf("reference(% X) = %#04x, want %#04x", tt.input, got, tt.want)
			}
		})
	}
}

func TestAppendLowByteFirst(t *testing.T) {
	req := specframes.MustHex("01 03 50 00 00 18")
	got := Append(req, Checksum(req))
	want := specframes.MustHex("01 03 50 00 00 18 54 C0")
	if string(got) != string(want) {
		t.Fatalf("Append = % X, want % X", got, want)
	}
	if !Valid(got) {
		t.Fatal("Valid rejects a frame with its own CRC")
	}
	got[len(got)-1] ^= 1
	if Valid(got) {
		t.Fatal("Valid accepts a frame with a flipped CRC bit")
	}
	if Valid([]byte{0x01, 0x02}) {
		t.Fatal("Valid accepts a frame with no payload")
	}
}

func TestUpdateIsIncremental(t *testing.T) {
	p := []byte("123456789")
	for i := range p {
		if got := Update(Update(Init, p[:i]), p[i:]); got != 0x4B37 {
			t.Fatalf("split at %d: %#04x", i, got)
		}
	}
}

func FuzzChecksum(f *testing.F) {
	f.Add([]byte("123456789"))
	f.Add([]byte{0x01, 0x03, 0x50, 0x00, 0x00, 0x18})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, p []byte) {
		if got, want := Checksum(p), bitwise(p); got != want {
			t.Fatalf("Checksum(% X) = %#04x, reference %#04x", p, got, want)
		}
		if !Valid(Append(append([]byte{0}, p...), Checksum(append([]byte{0}, p...)))) {
			t.Fatal("Append then Valid fails")
		}
	})
}

func ExampleAppend() {
	req := []byte{0x01, 0x03, 0x50, 0x00, 0x00, 0x18}
	fmt.Printf("% X\n", Append(req, Checksum(req)))
	// Output: 01 03 50 00 00 18 54 C0
}

func BenchmarkChecksum(b *testing.B) {
	for _, size := range []int{8, 256} {
		p := make([]byte, size)
		b.Run(fmt.Sprint(size), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(size))
			for b.Loop() {
				Checksum(p)
			}
		})
	}
}
