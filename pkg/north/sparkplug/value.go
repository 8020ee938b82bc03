package sparkplug

import (
	"fmt"

	"github.com/mcpgw/mcpgw/pkg/north/sparkplug/sproto"
	"github.com/mcpgw/mcpgw/pkg/tag"
)

// dataType is v's Sparkplug datatype: a scaled integer is a Double.
func dataType(v *tag.Tag) sproto.DataType {
	if v.Scaled() && v.Type != tag.Bool && v.Type != tag.String {
		return sproto.DataType_Double
	}
	switch v.Type {
	case tag.Bool:
		return sproto.DataType_Boolean
	case tag.Int16:
		return sproto.DataType_Int16
	case tag.Uint16:
		return sproto.DataType_UInt16
	case tag.Int32:
		return sproto.DataType_Int32
	case tag.Uint32:
		return sproto.DataType_UInt32
	case tag.Int64:
		return sproto.DataType_Int64
	case tag.Uint64:
		return sproto.DataType_UInt64
	case tag.Float32:
		return sproto.DataType_Float
	case tag.Float64:
		return sproto.DataType_Double
	}
	return sproto.DataType_String
}

// setValue puts x into m as datatype t asks (Sparkplug 3.0, 6.4.16: the
// signed types as two's complement in int_value or long_value).
func setValue(m *sproto.Payload_Metric, t sproto.DataType, x tag.Value) {
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
		m.Value = &sproto.Payload_Metric_FloatValue{FloatValue: float32(float(x))}
	case sproto.DataType_Double:
		m.Value = &sproto.Payload_Metric_DoubleValue{DoubleValue: float(x)}
	default:
		s, _ := x.(string)
		m.Value = &sproto.Payload_Metric_StringValue{StringValue: s}
	}
}

// getValue reads a metric's value as decode would give it for datatype t
// (a DCMD's value).
func getValue(m *sproto.Payload_Metric, t sproto.DataType) (tag.Value, error) {
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

func float(x tag.Value) float64 {
	f, _ := tag.Number(x)
	return f
}
