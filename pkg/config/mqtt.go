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
	Broker       string   `toml:"broker"`        // one broker: brokers = [broker]
	Brokers      []string `toml:"brokers"`       // tcp://host:1883, or ssl://host:8883 with ca (and cert, key), tried in turn; none: off
	ClientID     string   `toml:"client_id"`     // default: "mcpgw-" + node
	Group        string   `toml:"group"`         // Sparkplug group id
	Node         string   `toml:"node"`          // Sparkplug edge node id
	Username     string   `toml:"username"`      //
	PasswordFile string   `toml:"password_file"` // a file holding the password (not the config: it is often world-readable)
	CA           string   `toml:"ca"`            // PEM: the broker's CA, for ssl://
	Cert         string   `toml:"cert"`          // PEM: a client certificate, for brokers that ask for one
	Key          string   `toml:"key"`
	Buffer       int      `toml:"buffer"`       // messages kept in memory while the broker is away (no store): default 10000, oldest dropped first
	Store        string   `toml:"store"`        // a directory: messages wait on disk instead, across restarts; empty: in memory
	StoreMaxMB   int      `toml:"store_max_mb"` // the store's size: default 256, oldest dropped first
	PrimaryHost  string   `toml:"primary_host"` // the Sparkplug host id whose STATE says when to publish; empty: none
	LegacyState  bool     `toml:"legacy_state"` // accept Sparkplug 2.2's STATE/<host> with ONLINE/OFFLINE too

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
	if bits && v.Bit != 0 {
		return fmt.Errorf("value %q: bit %d: not for a poll of bits (function %d), where each bit is a value of its own: give its offset instead", v.Name, v.Bit, p.Function)
	}
	if v.Bit < 0 || v.Bit > 15 {
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

// On reports whether the edge node is configured.
func (m *MQTT) On() bool { return len(m.Brokers) > 0 }

func (m *MQTT) check() error {
	if m.Broker != "" {
		if len(m.Brokers) > 0 {
			return errors.New("mqtt.broker and mqtt.brokers: give one of them (brokers is the list, broker a list of one)")
		}
		m.Brokers = []string{m.Broker}
	}
	if len(m.Brokers) == 0 {
		return nil
	}
	for _, b := range m.Brokers {
		u, err := url.Parse(b)
		if err != nil || u.Host == "" || (u.Scheme != "tcp" && u.Scheme != "ssl") {
			return fmt.Errorf("mqtt.brokers: %q: want tcp://host:1883 or ssl://host:8883", b)
		}
	}
	if m.Group == "" || m.Node == "" {
		return errors.New("mqtt.group and mqtt.node: required with mqtt.brokers, the Sparkplug group and edge node ids")
	}
	if strings.ContainsAny(m.PrimaryHost, "/+#") {
		return fmt.Errorf("mqtt.primary_host %q: a Sparkplug host id must not contain /, + or #", m.PrimaryHost)
	}
	if m.LegacyState && m.PrimaryHost == "" {
		return errors.New("mqtt.legacy_state: needs mqtt.primary_host, the host whose STATE to follow")
	}
	if m.StoreMaxMB == 0 {
		m.StoreMaxMB = 256
	}
	if m.StoreMaxMB < 0 {
		return fmt.Errorf("mqtt.store_max_mb %d: must be positive", m.StoreMaxMB)
	}
	if m.Store != "" {
		if err := writableDir(m.Store); err != nil {
			return fmt.Errorf("mqtt.store: %w (create it, owned by the user mcpgw runs as)", err)
		}
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

// writableDir checks that dir is a directory this process can create
// files in.
func writableDir(dir string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s: not a directory", dir)
	}
	f, err := os.CreateTemp(dir, ".check-*")
	if err != nil {
		return fmt.Errorf("%s: not writable: %w", dir, err)
	}
	f.Close()
	return os.Remove(f.Name())
}
