package sparkplug

import (
	"math"
	"slices"
	"testing"

	"github.com/mcpgw/mcpgw/pkg/config"
	"github.com/mcpgw/mcpgw/pkg/north/sparkplug/sproto"
)

func val(typ, order string, scale, offset float64) *config.Value {
	return &config.Value{Name: "v", Type: typ, Order: order, Scale: &scale, OffsetValue: offset}
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
		if got := decode(v, tc.regs); math.Abs(got.(float64)-123.456) > 1e-4 {
			t.Errorf("%s: % X decodes to %v", tc.order, tc.regs, got)
		}
		regs, err := encode(v, 123.456)
		if err != nil || !slices.Equal(regs, tc.regs) {
			t.Errorf("%s: 123.456 encodes to % X (%v), want % X", tc.order, regs, err, tc.regs)
		}
	}
	// 64 bits: CDAB reverses the words.
	v := val("uint64", "CDAB", 1, 0)
	if got := decode(v, []uint16{0x4444, 0x3333, 0x2222, 0x1111}); got != uint64(0x1111222233334444) {
		t.Errorf("uint64 CDAB: %X", got)
	}
}

// TestRoundTrips: every type, scaled or not, written and read back.
func TestRoundTrips(t *testing.T) {
	for _, tc := range []struct {
		v *config.Value
		x value
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
		regs, err := encode(tc.v, tc.x)
		if err != nil {
			t.Errorf("%s %v: %v", tc.v.Type, tc.x, err)
			continue
		}
		got := decode(tc.v, regs)
		if f, ok := tc.x.(float64); ok && math.Abs(got.(float64)-f) > 1e-9*math.Max(1, math.Abs(f)) || !ok && got != tc.x {
			t.Errorf("%s %v: registers % X read back as %v", tc.v.Type, tc.x, regs, got)
		}
	}
	s := &config.Value{Name: "s", Type: "string", Length: 3}
	regs, _ := encode(s, "ABCDE")
	if got := decode(s, regs); got != "ABCDE" || !slices.Equal(regs, []uint16{0x4142, 0x4344, 0x4500}) {
		t.Errorf("string: % X, %q", regs, got)
	}
	for _, bad := range []struct {
		v *config.Value
		x value
	}{{val("uint16", "ABCD", 1, 0), int64(-1)}, {val("int16", "ABCD", 1, 0), 40000.0}, {val("uint16", "ABCD", 1, 0), "x"}, {s, "too long!"}} {
		if _, err := encode(bad.v, bad.x); err == nil {
			t.Errorf("%s %v: encoded", bad.v.Type, bad.x)
		}
	}
}

// TestSparkplugEncoding: each type travels in the field and form the
// specification gives it (signed ones as two's complement), and reads
// back as it went.
func TestSparkplugEncoding(t *testing.T) {
	for _, tc := range []struct {
		v    *config.Value
		x    value
		want sproto.DataType
	}{
		{val("int16", "ABCD", 1, 0), int64(-2), sproto.DataType_Int16},
		{val("uint32", "ABCD", 1, 0), uint64(1 << 31), sproto.DataType_UInt32},
		{val("int64", "ABCD", 1, 0), int64(-5), sproto.DataType_Int64},
		{val("int16", "ABCD", 0.5, 0), 1.5, sproto.DataType_Double},
		{val("float32", "ABCD", 1, 0), 2.5, sproto.DataType_Float},
		{&config.Value{Type: "bool", Scale: new(float64)}, true, sproto.DataType_Boolean},
	} {
		dt := dataType(tc.v)
		if dt != tc.want {
			t.Errorf("%s: datatype %v, want %v", tc.v.Type, dt, tc.want)
		}
		m := &sproto.Payload_Metric{}
		setValue(m, dt, tc.x)
		got, err := getValue(m, dt)
		if err != nil || got != tc.x {
			t.Errorf("%s %v: read back %v (%v)", tc.v.Type, tc.x, got, err)
		}
	}
	m := &sproto.Payload_Metric{}
	setValue(m, sproto.DataType_Int16, int64(-2))
	if m.GetIntValue() != 0xFFFFFFFE {
		t.Errorf("Int16 -2 as int_value %#x, want two's complement 0xFFFFFFFE", m.GetIntValue())
	}
}

func TestDeadband(t *testing.T) {
	v := val("float32", "ABCD", 1, 0)
	v.Deadband = 0.5
	if changed(v, 10.0, 10.4) || !changed(v, 10.0, 10.6) || !changed(v, nil, 10.0) {
		t.Error("deadband 0.5")
	}
	if changed(val("uint16", "ABCD", 1, 0), uint64(3), uint64(3)) || !changed(val("uint16", "ABCD", 1, 0), uint64(3), uint64(4)) {
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
		x := decode(v, words)
		if x == nil {
			t.Fatalf("%s: nil", v.Type)
		}
	})
}
