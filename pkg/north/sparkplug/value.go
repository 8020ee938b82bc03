package sparkplug

import (
	"encoding/binary"
	"fmt"
	"math"
	"strings"

	"github.com/mcpgw/mcpgw/pkg/config"
	"github.com/mcpgw/mcpgw/pkg/north/sparkplug/sproto"
)

// A value as read: bool, int64, uint64, float64 or string.
type value = any

// decode reads v from a poll's data: words are the registers (or, for a
// poll of bits, one word per bit, 0 or 1), from the poll's first address.
// It is a pure function of the bytes the device returned.
func decode(v *config.Value, words []uint16) value {
	w := words[v.Offset : v.Offset+v.Registers()]
	var raw value
	switch v.Type {
	case "bool":
		return w[0]>>v.Bit&1 == 1
	case "string":
		b := ordered(w, "ABCD")
		return strings.TrimRight(string(b), "\x00")
	case "int16":
		raw = int64(int16(w[0]))
	case "uint16":
		raw = uint64(w[0])
	case "int32":
		raw = int64(int32(binary.BigEndian.Uint32(ordered(w, v.Order))))
	case "uint32":
		raw = uint64(binary.BigEndian.Uint32(ordered(w, v.Order)))
	case "int64":
		raw = int64(binary.BigEndian.Uint64(ordered(w, v.Order)))
	case "uint64":
		raw = binary.BigEndian.Uint64(ordered(w, v.Order))
	case "float32":
		raw = float64(math.Float32frombits(binary.BigEndian.Uint32(ordered(w, v.Order))))
	case "float64":
		raw = math.Float64frombits(binary.BigEndian.Uint64(ordered(w, v.Order)))
	}
	if !v.Scaled() {
		return raw
	}
	return toFloat(raw)**v.Scale + v.OffsetValue
}

// encode is decode's inverse, for a write: the registers that hold x.
func encode(v *config.Value, x value) ([]uint16, error) {
	n := v.Registers()
	if v.Type == "string" {
		s, ok := x.(string)
		if !ok || len(s) > 2*n {
			return nil, fmt.Errorf("want a string of at most %d characters", 2*n)
		}
		b := make([]byte, 2*n)
		copy(b, s)
		return words(b, "ABCD"), nil
	}
	f, isNum := number(x)
	if !isNum {
		return nil, fmt.Errorf("want a number, got %T", x)
	}
	if v.Scaled() {
		f = (f - v.OffsetValue) / *v.Scale
	}
	if v.Type != "float32" && v.Type != "float64" {
		f = math.Round(f)
	}
	b := make([]byte, 8)
	var lo, hi float64
	switch v.Type {
	case "int16":
		lo, hi = math.MinInt16, math.MaxInt16
		binary.BigEndian.PutUint16(b, uint16(int16(f)))
	case "uint16":
		lo, hi = 0, math.MaxUint16
		binary.BigEndian.PutUint16(b, uint16(f))
	case "int32":
		lo, hi = math.MinInt32, math.MaxInt32
		binary.BigEndian.PutUint32(b, uint32(int32(f)))
	case "uint32":
		lo, hi = 0, math.MaxUint32
		binary.BigEndian.PutUint32(b, uint32(f))
	case "int64":
		lo, hi = math.MinInt64, math.MaxInt64
		binary.BigEndian.PutUint64(b, uint64(int64(f)))
	case "uint64":
		lo, hi = 0, math.MaxUint64
		binary.BigEndian.PutUint64(b, uint64(f))
	case "float32":
		lo, hi = -math.MaxFloat32, math.MaxFloat32
		binary.BigEndian.PutUint32(b, math.Float32bits(float32(f)))
	case "float64":
		lo, hi = -math.MaxFloat64, math.MaxFloat64
		binary.BigEndian.PutUint64(b, math.Float64bits(f))
	default:
		return nil, fmt.Errorf("a %s cannot be written", v.Type)
	}
	if f < lo || f > hi || math.IsNaN(f) {
		return nil, fmt.Errorf("%v is out of range for a %s", x, v.Type)
	}
	return words(b[:2*n], v.Order), nil
}

// ordered returns the value's bytes, most significant first, from
// registers w in byte and word order ("ABCD": the first register holds
// the most significant word, each word high byte first; "CDAB": words in
// reverse order; "BADC": bytes swapped within each word; "DCBA": all
// reversed).
func ordered(w []uint16, order string) []byte {
	b := make([]byte, 2*len(w))
	for i, x := range w {
		binary.BigEndian.PutUint16(b[2*i:], x)
	}
	switch order {
	case "DCBA":
		reverse(b)
	case "BADC":
		for i := 0; i+1 < len(b); i += 2 {
			b[i], b[i+1] = b[i+1], b[i]
		}
	case "CDAB":
		for i, j := 0, len(w)-1; i < j; i, j = i+1, j-1 {
			b[2*i], b[2*i+1], b[2*j], b[2*j+1] = b[2*j], b[2*j+1], b[2*i], b[2*i+1]
		}
	}
	return b
}

// words is ordered's inverse: the registers holding bytes b (most
// significant first) in order.
func words(b []byte, order string) []uint16 {
	// Every order is its own inverse.
	w := make([]uint16, len(b)/2)
	for i := range w {
		w[i] = binary.BigEndian.Uint16(b[2*i:])
	}
	b = ordered(w, order)
	for i := range w {
		w[i] = binary.BigEndian.Uint16(b[2*i:])
	}
	return w
}

func reverse(b []byte) {
	for i, j := 0, len(b)-1; i < j; i, j = i+1, j-1 {
		b[i], b[j] = b[j], b[i]
	}
}

func toFloat(x value) float64 {
	f, _ := number(x)
	return f
}

// number returns x as a float64, if it is a number (or a bool: 0, 1).
func number(x value) (float64, bool) {
	switch x := x.(type) {
	case int64:
		return float64(x), true
	case uint64:
		return float64(x), true
	case float64:
		return x, true
	case bool:
		if x {
			return 1, true
		}
		return 0, true
	}
	return 0, false
}

// dataType is v's Sparkplug datatype: a scaled integer is a Double.
func dataType(v *config.Value) sproto.DataType {
	if v.Scaled() && v.Type != "bool" && v.Type != "string" {
		return sproto.DataType_Double
	}
	switch v.Type {
	case "bool":
		return sproto.DataType_Boolean
	case "int16":
		return sproto.DataType_Int16
	case "uint16":
		return sproto.DataType_UInt16
	case "int32":
		return sproto.DataType_Int32
	case "uint32":
		return sproto.DataType_UInt32
	case "int64":
		return sproto.DataType_Int64
	case "uint64":
		return sproto.DataType_UInt64
	case "float32":
		return sproto.DataType_Float
	case "float64":
		return sproto.DataType_Double
	}
	return sproto.DataType_String
}

// setValue puts x into m as datatype t asks (Sparkplug 3.0, 6.4.16: the
// signed types as two's complement in int_value or long_value).
func setValue(m *sproto.Payload_Metric, t sproto.DataType, x value) {
	switch t {
	case sproto.DataType_Boolean:
		b, _ := x.(bool)
		m.Value = &sproto.Payload_Metric_BooleanValue{BooleanValue: b}
	case sproto.DataType_Int8, sproto.DataType_Int16, sproto.DataType_Int32:
		i, _ := x.(int64)
		m.Value = &sproto.Payload_Metric_IntValue{IntValue: uint32(int32(i))}
	case sproto.DataType_UInt8, sproto.DataType_UInt16:
		u, _ := x.(uint64)
		m.Value = &sproto.Payload_Metric_IntValue{IntValue: uint32(u)}
	case sproto.DataType_UInt32, sproto.DataType_UInt64:
		u, _ := x.(uint64)
		m.Value = &sproto.Payload_Metric_LongValue{LongValue: u}
	case sproto.DataType_Int64:
		i, _ := x.(int64)
		m.Value = &sproto.Payload_Metric_LongValue{LongValue: uint64(i)}
	case sproto.DataType_Float:
		m.Value = &sproto.Payload_Metric_FloatValue{FloatValue: float32(toFloat(x))}
	case sproto.DataType_Double:
		m.Value = &sproto.Payload_Metric_DoubleValue{DoubleValue: toFloat(x)}
	default:
		s, _ := x.(string)
		m.Value = &sproto.Payload_Metric_StringValue{StringValue: s}
	}
}

// getValue reads a metric's value as decode would give it for datatype t
// (a DCMD's value).
func getValue(m *sproto.Payload_Metric, t sproto.DataType) (value, error) {
	switch x := m.Value.(type) {
	case *sproto.Payload_Metric_BooleanValue:
		return x.BooleanValue, nil
	case *sproto.Payload_Metric_IntValue:
		switch t {
		case sproto.DataType_Int8, sproto.DataType_Int16, sproto.DataType_Int32:
			return int64(int32(x.IntValue)), nil
		}
		return uint64(x.IntValue), nil
	case *sproto.Payload_Metric_LongValue:
		if t == sproto.DataType_Int64 {
			return int64(x.LongValue), nil
		}
		return x.LongValue, nil
	case *sproto.Payload_Metric_FloatValue:
		return float64(x.FloatValue), nil
	case *sproto.Payload_Metric_DoubleValue:
		return x.DoubleValue, nil
	case *sproto.Payload_Metric_StringValue:
		return x.StringValue, nil
	}
	return nil, fmt.Errorf("no value, or a kind a register cannot hold")
}

// changed reports whether x differs from the last value published,
// beyond v's deadband for numbers.
func changed(v *config.Value, last, x value) bool {
	if last == nil {
		return true
	}
	a, ok1 := number(last)
	b, ok2 := number(x)
	if ok1 && ok2 && v.Type != "bool" {
		if v.Deadband > 0 {
			return math.Abs(a-b) > v.Deadband
		}
	}
	return last != x
}
