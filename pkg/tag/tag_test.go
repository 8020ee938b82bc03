package tag

import (
	"math"
	"slices"
	"testing"
)

func val(typ, order string, scale, add float64) *Tag {
	return &Tag{Name: "v", Type: typ, Order: order, Scale: scale, Add: add}
}

// TestOrders: 123.456 as a float32 is 0x42F6E979; each order puts its
// bytes in the registers its name says.
func TestOrders(t *testing.T) {
	for _, tc := range []struct {
		order string
		regs  []uint16
	}{
		{"ABCD", []uint16{0x42F6, 0xE979}},
		{"CDAB", []uint16{0xE979, 0x42F6}},
		{"BADC", []uint16{0xF642, 0x79E9}},
		{"DCBA", []uint16{0x79E9, 0xF642}},
	} {
		v := val("float32", tc.order, 1, 0)
		if got := v.Decode(tc.regs); math.Abs(got.(float64)-123.456) > 1e-4 {
			t.Errorf("%s: % X decodes to %v", tc.order, tc.regs, got)
		}
		regs, err := v.Encode(123.456)
		if err != nil || !slices.Equal(regs, tc.regs) {
			t.Errorf("%s: 123.456 encodes to % X (%v), want % X", tc.order, regs, err, tc.regs)
		}
	}
	// 64 bits: CDAB reverses the words.
	v := val("uint64", "CDAB", 1, 0)
	if got := v.Decode([]uint16{0x4444, 0x3333, 0x2222, 0x1111}); got != uint64(0x1111222233334444) {
		t.Errorf("uint64 CDAB: %X", got)
	}
}

// TestRoundTrips: every type, scaled or not, written and read back.
func TestRoundTrips(t *testing.T) {
	for _, tc := range []struct {
		v *Tag
		x Value
	}{
		{val("int16", "ABCD", 1, 0), int64(-2)},
		{val("uint16", "ABCD", 1, 0), uint64(65535)},
		{val("int32", "DCBA", 1, 0), int64(-100000)},
		{val("uint32", "BADC", 1, 0), uint64(4000000000)},
		{val("int64", "CDAB", 1, 0), int64(-1 << 40)},
		{val("float64", "ABCD", 1, 0), 1e-300},
		{val("int16", "ABCD", 0.1, -40), 21.5}, // raw 615
		{val("uint32", "CDAB", 0.01, 0), 12345.67},
	} {
		regs, err := tc.v.Encode(tc.x)
		if err != nil {
			t.Errorf("%s %v: %v", tc.v.Type, tc.x, err)
			continue
		}
		got := tc.v.Decode(regs)
		if f, ok := tc.x.(float64); ok && math.Abs(got.(float64)-f) > 1e-9*math.Max(1, math.Abs(f)) || !ok && got != tc.x {
			t.Errorf("%s %v: registers % X read back as %v", tc.v.Type, tc.x, regs, got)
		}
	}
	s := &Tag{Name: "s", Type: "string", Length: 3}
	regs, _ := s.Encode("ABCDE")
	if got := s.Decode(regs); got != "ABCDE" || !slices.Equal(regs, []uint16{0x4142, 0x4344, 0x4500}) {
		t.Errorf("string: % X, %q", regs, got)
	}
	for _, bad := range []struct {
		v *Tag
		x Value
	}{{val("uint16", "ABCD", 1, 0), int64(-1)}, {val("int16", "ABCD", 1, 0), 40000.0}, {val("uint16", "ABCD", 1, 0), "x"}, {s, "too long!"}} {
		if _, err := bad.v.Encode(bad.x); err == nil {
			t.Errorf("%s %v: encoded", bad.v.Type, bad.x)
		}
	}
}

func TestDeadband(t *testing.T) {
	v := val("float32", "ABCD", 1, 0)
	v.Deadband = 0.5
	if v.Changed(10.0, 10.4) || !v.Changed(10.0, 10.6) || !v.Changed(nil, 10.0) {
		t.Error("deadband 0.5")
	}
	if val("uint16", "ABCD", 1, 0).Changed(uint64(3), uint64(3)) || !val("uint16", "ABCD", 1, 0).Changed(uint64(3), uint64(4)) {
		t.Error("no deadband")
	}
}

// FuzzDecode: any registers decode without a panic, for every type and
// order.
func FuzzDecode(f *testing.F) {
	f.Add([]byte{0x42, 0xF6, 0xE9, 0x79, 0, 0, 0, 0}, uint8(0), uint8(0))
	f.Fuzz(func(t *testing.T, b []byte, typ, order uint8) {
		types := []string{"bool", "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64", "string"}
		orders := []string{"ABCD", "DCBA", "BADC", "CDAB"}
		words := make([]uint16, len(b)/2)
		for i := range words {
			words[i] = uint16(b[2*i])<<8 | uint16(b[2*i+1])
		}
		v := val(types[int(typ)%len(types)], orders[int(order)%len(orders)], 1, 0)
		v.Length = len(words)
		if v.Registers() > len(words) || v.Registers() == 0 {
			return
		}
		x := v.Decode(words)
		if x == nil {
			t.Fatalf("%s: nil", v.Type)
		}
	})
}
