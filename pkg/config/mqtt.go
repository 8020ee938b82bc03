package config

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
)

// MQTT is the Sparkplug B edge node: where it publishes the polled
// values, and as whom.
type MQTT struct {
	Broker       string `toml:"broker"`        // tcp://host:1883, or ssl://host:8883 with ca (and cert, key); empty: off
	ClientID     string `toml:"client_id"`     // default: "mcpgw-" + node
	Group        string `toml:"group"`         // Sparkplug group id
	Node         string `toml:"node"`          // Sparkplug edge node id
	Username     string `toml:"username"`      //
	PasswordFile string `toml:"password_file"` // a file holding the password (not the config: it is often world-readable)
	CA           string `toml:"ca"`            // PEM: the broker's CA, for ssl://
	Cert         string `toml:"cert"`          // PEM: a client certificate, for brokers that ask for one
	Key          string `toml:"key"`
	Buffer       int    `toml:"buffer"` // messages kept while the broker is away: default 10000, oldest dropped first

	Password string `toml:"-"` // read from PasswordFile
}

// Value is a named, typed value in a poll's block ([[bus.poll.value]]),
// published as a Sparkplug metric.
type Value struct {
	Name        string   `toml:"name"`
	Offset      int      `toml:"offset"` // register (or bit, for functions 1 and 2) within the poll
	Type        string   `toml:"type"`   // bool, int16, uint16, int32, uint32, int64, uint64, float32, float64, string
	Bit         int      `toml:"bit"`    // bool in a register: 0 (lowest) to 15
	Length      int      `toml:"length"` // string: registers (two characters each)
	Order       string   `toml:"order"`  // multi-register types: ABCD (default), DCBA, BADC, CDAB
	Scale       *float64 `toml:"scale"`  // value = raw * scale + offset_value: default 1
	OffsetValue float64  `toml:"offset_value"`
	Writable    bool     `toml:"writable"` // accepts Sparkplug DCMD writes (function 3 polls only)
	Deadband    float64  `toml:"deadband"` // publish a number only when it moved more than this
}

// Registers returns how many registers (or bits) the value takes.
func (v *Value) Registers() int {
	switch v.Type {
	case "int32", "uint32", "float32":
		return 2
	case "int64", "uint64", "float64":
		return 4
	case "string":
		return v.Length
	}
	return 1
}

// Scaled reports whether the value is scaled: an integer becomes a
// double.
func (v *Value) Scaled() bool { return *v.Scale != 1 || v.OffsetValue != 0 }

func (v *Value) check(p Poll) error {
	if v.Name == "" {
		return errors.New("name: required, the Sparkplug metric's name")
	}
	switch v.Type {
	case "bool", "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64", "string":
	case "":
		return fmt.Errorf("value %q: type: required: bool, int16, uint16, int32, uint32, int64, uint64, float32, float64 or string", v.Name)
	default:
		return fmt.Errorf("value %q: type %q: want bool, int16, uint16, int32, uint32, int64, uint64, float32, float64 or string", v.Name, v.Type)
	}
	bits := p.Function == 1 || p.Function == 2
	if bits && v.Type != "bool" {
		return fmt.Errorf("value %q: type %q: a poll of bits (function %d) holds bool values only", v.Name, v.Type, p.Function)
	}
	if v.Type == "string" && v.Length < 1 {
		return fmt.Errorf("value %q: length: required for a string, in registers (two characters each)", v.Name)
	}
	if v.Bit < 0 || v.Bit > 15 || bits && v.Bit != 0 {
		return fmt.Errorf("value %q: bit %d: 0..15, for a bool in a register", v.Name, v.Bit)
	}
	if v.Offset < 0 || v.Offset+v.Registers() > p.Count {
		return fmt.Errorf("value %q: offset %d: the value must lie within the poll's %d registers", v.Name, v.Offset, p.Count)
	}
	switch v.Order = strings.ToUpper(v.Order); v.Order {
	case "":
		v.Order = "ABCD"
	case "ABCD", "DCBA", "BADC", "CDAB":
	default:
		return fmt.Errorf("value %q: order %q: want ABCD, DCBA, BADC or CDAB", v.Name, v.Order)
	}
	if v.Scale == nil {
		one := 1.0
		v.Scale = &one
	}
	if *v.Scale == 0 {
		return fmt.Errorf("value %q: scale 0: every value would read 0", v.Name)
	}
	if v.Writable && p.Function != 3 {
		return fmt.Errorf("value %q: writable: only values of holding registers (function 3) can be written", v.Name)
	}
	if v.Writable && v.Type == "bool" {
		return fmt.Errorf("value %q: writable: a bool in a register cannot be written without changing its neighbours; write the register as a uint16", v.Name)
	}
	if v.Deadband < 0 {
		return fmt.Errorf("value %q: deadband %v: must be 0 or positive", v.Name, v.Deadband)
	}
	return nil
}

func (m *MQTT) check() error {
	if m.Broker == "" {
		return nil
	}
	u, err := url.Parse(m.Broker)
	if err != nil || u.Host == "" || (u.Scheme != "tcp" && u.Scheme != "ssl") {
		return fmt.Errorf("mqtt.broker %q: want tcp://host:1883 or ssl://host:8883", m.Broker)
	}
	if m.Group == "" || m.Node == "" {
		return errors.New("mqtt.group and mqtt.node: required with mqtt.broker, the Sparkplug group and edge node ids")
	}
	for _, id := range []struct{ key, v string }{{"group", m.Group}, {"node", m.Node}} {
		if strings.ContainsAny(id.v, "/+#") {
			return fmt.Errorf("mqtt.%s %q: a Sparkplug id must not contain /, + or #", id.key, id.v)
		}
	}
	if m.ClientID == "" {
		m.ClientID = "mcpgw-" + m.Node
	}
	if m.Buffer == 0 {
		m.Buffer = 10000
	}
	if m.Buffer < 0 {
		return fmt.Errorf("mqtt.buffer %d: must be positive", m.Buffer)
	}
	if (m.Cert == "") != (m.Key == "") {
		return errors.New("mqtt.cert and mqtt.key: give both or neither")
	}
	if m.PasswordFile != "" {
		b, err := os.ReadFile(m.PasswordFile)
		if err != nil {
			return fmt.Errorf("mqtt.password_file: %w", err)
		}
		m.Password = strings.TrimRight(string(b), "\r\n")
	}
	return nil
}
