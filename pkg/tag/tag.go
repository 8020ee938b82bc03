// Package tag reads and writes named, typed values in a block of Modbus
// registers: a float32 in two registers in some word order, a scaled
// int16, a bool in one bit of a register, a string. The north-bound
// publishers use it to turn a poll's registers into values and a
// value written from above back into registers.
//
// Decode and Encode are pure functions over the words a device returned:
// the registers of a poll, or for a poll of bits one word per bit, 0 or 1.
package tag

import (
	"encoding/binary"
	"fmt"
	"math"
	"strings"
)

// Types a tag can have.
const (
	Bool    = "bool"
	Int16   = "int16"
	Uint16  = "uint16"
	Int32   = "int32"
	Uint32  = "uint32"
	Int64   = "int64"
	Uint64  = "uint64"
	Float32 = "float32"
	Float64 = "float64"
	String  = "string"
)

// Tag is one value in a block of registers.
type Tag struct {
	Name     string
	Offset   int     // register (or bit, for a poll of bits) within the block
	Type     string  // Bool ... String
	Bit      int     // Bool in a register: 0 (lowest) to 15
	Length   int     // String: registers, two characters each
	Order    string  // multi-register types: ABCD, DCBA, BADC or CDAB; "" is ABCD
	Scale    float64 // value = raw*Scale + Add; 0 is taken as 1
	Add      float64
	Writable bool
	Deadband float64 // a number is Changed only when it moved more than this
}

// A Value as read: bool, int64, uint64, float64 or string.
type Value = any

// Registers is how many registers (or bits) the tag takes.
func (t *Tag) Registers() int {
	switch t.Type {
	case Int32, Uint32, Float32:
		return 2
	case Int64, Uint64, Float64:
		return 4
	case String:
		return t.Length
	}
	return 1
}

func (t *Tag) scale() float64 {
	if t.Scale == 0 {
		return 1
	}
	return t.Scale
}

// Scaled reports whether the tag is scaled: its integer becomes a
// float64.
func (t *Tag) Scaled() bool { return t.scale() != 1 || t.Add != 0 }

// Decode reads the tag from a block's words, which must hold it
// (len(words) >= t.Offset+t.Registers()).
func (t *Tag) Decode(words []uint16) Value {
	w := words[t.Offset : t.Offset+t.Registers()]
	var raw Value
	switch t.Type {
	case Bool:
		return w[0]>>t.Bit&1 == 1
	case String:
		b := ordered(w, "ABCD")
		return strings.TrimRight(string(b), "\x00")
	case Int16:
		raw = int64(int16(w[0]))
	case Uint16:
		raw = uint64(w[0])
	case Int32:
		raw = int64(int32(binary.BigEndian.Uint32(ordered(w, t.Order))))
	case Uint32:
		raw = uint64(binary.BigEndian.Uint32(ordered(w, t.Order)))
	case Int64:
		raw = int64(binary.BigEndian.Uint64(ordered(w, t.Order)))
	case Uint64:
		raw = binary.BigEndian.Uint64(ordered(w, t.Order))
	case Float32:
		raw = float64(math.Float32frombits(binary.BigEndian.Uint32(ordered(w, t.Order))))
	case Float64:
		raw = math.Float64frombits(binary.BigEndian.Uint64(ordered(w, t.Order)))
	}
	if !t.Scaled() {
		return raw
	}
	f, _ := Number(raw)
	return f*t.scale() + t.Add
}

// Encode is Decode's inverse, for a write: the registers that hold x.
func (t *Tag) Encode(x Value) ([]uint16, error) {
	n := t.Registers()
	if t.Type == String {
		s, ok := x.(string)
		if !ok || len(s) > 2*n {
			return nil, fmt.Errorf("want a string of at most %d characters", 2*n)
		}
		b := make([]byte, 2*n)
		copy(b, s)
		return words(b, "ABCD"), nil
	}
	f, isNum := Number(x)
	if !isNum {
		return nil, fmt.Errorf("want a number, got %T", x)
	}
	if t.Scaled() {
		f = (f - t.Add) / t.scale()
	}
	if t.Type != Float32 && t.Type != Float64 {
		f = math.Round(f)
	}
	b := make([]byte, 8)
	var lo, hi float64
	switch t.Type {
	case Int16:
		lo, hi = math.MinInt16, math.MaxInt16
		binary.BigEndian.PutUint16(b, uint16(int16(f)))
	case Uint16:
		lo, hi = 0, math.MaxUint16
		binary.BigEndian.PutUint16(b, uint16(f))
	case Int32:
		lo, hi = math.MinInt32, math.MaxInt32
		binary.BigEndian.PutUint32(b, uint32(int32(f)))
	case Uint32:
		lo, hi = 0, math.MaxUint32
		binary.BigEndian.PutUint32(b, uint32(f))
	case Int64:
		lo, hi = math.MinInt64, math.MaxInt64
		binary.BigEndian.PutUint64(b, uint64(int64(f)))
	case Uint64:
		lo, hi = 0, math.MaxUint64
		binary.BigEndian.PutUint64(b, uint64(f))
	case Float32:
		lo, hi = -math.MaxFloat32, math.MaxFloat32
		binary.BigEndian.PutUint32(b, math.Float32bits(float32(f)))
	case Float64:
		lo, hi = -math.MaxFloat64, math.MaxFloat64
		binary.BigEndian.PutUint64(b, math.Float64bits(f))
	default:
		return nil, fmt.Errorf("a %s cannot be written", t.Type)
	}
	if f < lo || f > hi || math.IsNaN(f) {
		return nil, fmt.Errorf("%v is out of range for a %s", x, t.Type)
	}
	return words(b[:2*n], t.Order), nil
}

// Changed reports whether x differs from the last value published,
// beyond the tag's deadband for numbers.
func (t *Tag) Changed(last, x Value) bool {
	if last == nil {
		return true
	}
	a, ok1 := Number(last)
	b, ok2 := Number(x)
	if ok1 && ok2 && t.Type != Bool && t.Deadband > 0 {
		return math.Abs(a-b) > t.Deadband
	}
	return last != x
}

// Number returns x as a float64, if it is a number (or a bool: 0, 1).
func Number(x Value) (float64, bool) {
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
		for i, j := 0, len(b)-1; i < j; i, j = i+1, j-1 {
			b[i], b[j] = b[j], b[i]
		}
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
