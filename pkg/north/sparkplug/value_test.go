package sparkplug

import (
	"testing"

	"github.com/mcpgw/mcpgw/pkg/north/sparkplug/sproto"
	"github.com/mcpgw/mcpgw/pkg/tag"
)

func val(typ string, scale float64) *tag.Tag { return &tag.Tag{Name: "v", Type: typ, Scale: scale} }

// TestSparkplugEncoding: each type travels in the field and form the
// specification gives it (signed ones as two's complement), and reads
// back as it went.
func TestSparkplugEncoding(t *testing.T) {
	for _, tc := range []struct {
		v    *tag.Tag
		x    tag.Value
		want sproto.DataType
	}{
		{val("int16", 1), int64(-2), sproto.DataType_Int16},
		{val("uint32", 1), uint64(1 << 31), sproto.DataType_UInt32},
		{val("int64", 1), int64(-5), sproto.DataType_Int64},
		{val("int16", 0.5), 1.5, sproto.DataType_Double},
		{val("float32", 1), 2.5, sproto.DataType_Float},
		{val("bool", 0.5), true, sproto.DataType_Boolean},
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
