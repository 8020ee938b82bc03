package config

import (
	"errors"
	"fmt"
	"time"
)

// SlaveLine is a serial line on which the gateway is an RTU slave,
// polled by a serial master, forwarding to Forward ([[slave_line]]).
type SlaveLine struct {
	Name     string   `toml:"name"` // in logs and metrics: default slave_line1, slave_line2, ...
	Port     string   `toml:"port"`
	Baud     int      `toml:"baud"`      // default 19200
	DataBits int      `toml:"data_bits"` // default 8
	Parity   string   `toml:"parity"`    // default E
	StopBits int      `toml:"stop_bits"` // default 1
	Units    UnitList `toml:"units"`     // the units the gateway answers for here: required
	Forward  string   `toml:"forward"`   // a [[bus]]'s name, or modbus+tcp://host:port
	Timeout  Duration `toml:"timeout"`   // the master's: default 1s; answers later are not sent

	Wire    Wire   `toml:"-"` // Port's kind
	Addr    string `toml:"-"` // Port without its scheme
	UnitIDs []byte `toml:"-"`
}

// check gives a slave line's port settings a Bus's defaults and checks.
func (s *SlaveLine) check() error {
	b := Bus{Name: s.Name, Port: s.Port, Baud: s.Baud, DataBits: s.DataBits, Parity: s.Parity, StopBits: s.StopBits, Units: s.Units}
	if err := b.setDefaults(); err != nil {
		return err
	}
	s.Baud, s.DataBits, s.Parity, s.StopBits, s.UnitIDs = b.Baud, b.DataBits, b.Parity, b.StopBits, b.UnitIDs
	s.Wire, s.Addr = b.Wire, b.Addr
	if s.Wire == ModbusTCP {
		return fmt.Errorf(`port %q: a slave line is a serial line ("/dev/ttyUSB1", or "tcp://host:port" through a serial device server) on which an RTU master polls the gateway; modbus+tcp:// names a Modbus TCP device, a [[bus]]'s port or a forward (a Modbus TCP master reaches the gateway on [server] listen)`, s.Port)
	}
	if s.Forward == "" {
		return errors.New(`forward: required: a [[bus]]'s name, or "modbus+tcp://host:502"`)
	}
	if s.Timeout.Duration == 0 {
		s.Timeout.Duration = time.Second
	}
	if s.Timeout.Duration < 0 {
		return fmt.Errorf("timeout %v: must be positive: the master's timeout", s.Timeout)
	}
	return nil
}

// ForwardLine is the name of the line the slave line's requests go to:
// the [[bus]] forward names, or for a modbus+tcp:// forward the line
// made for it, "<name>-forward", which serves this slave line only.
func (s *SlaveLine) ForwardLine() string {
	if isModbusTCP(s.Forward) {
		return s.Name + "-forward"
	}
	return s.Forward
}

// checkSlaveLines checks [[slave_line]] tables, and makes the line a
// modbus+tcp:// forward needs: a [[bus]] named "<name>-forward" serving
// the slave line's units, whose attempts fit in the master's timeout.
func (c *Config) checkSlaveLines() error {
	names := make(map[string]bool)
	for i := range c.SlaveLine {
		s := &c.SlaveLine[i]
		if s.Name == "" { // a name is optional: port, settings, units and forward are not
			s.Name = fmt.Sprintf("slave_line%d", i+1)
		}
		key := fmt.Sprintf("slave_line %q", s.Name)
		if err := s.check(); err != nil {
			return fmt.Errorf("%s: %w", key, err)
		}
		if names[s.Name] {
			return fmt.Errorf("%s: name: another [[slave_line]] has the same name", key)
		}
		names[s.Name] = true
		if isModbusTCP(s.Forward) {
			one, zero := 1, 0
			b := Bus{Name: s.ForwardLine(), Port: s.Forward, Units: s.Units, Retries: &zero, OfflineAfter: &one,
				Timeout: Duration{s.Timeout.Duration * 3 / 4}, Bound: true}
			if err := b.setDefaults(); err != nil {
				return fmt.Errorf("%s: forward: %w", key, err)
			}
			for _, u := range b.UnitIDs {
				for _, o := range c.Bus {
					if contains(o.UnitIDs, u) {
						return fmt.Errorf("%s: forward: unit %d is already served by bus %q; a unit id belongs to one line", key, u, o.Name)
					}
				}
			}
			c.Bus = append(c.Bus, b)
			continue
		}
		var target *Bus
		for j := range c.Bus {
			if c.Bus[j].Name == s.Forward {
				target = &c.Bus[j]
			}
		}
		if target == nil {
			return fmt.Errorf(`%s: forward %q: no [[bus]] of that name; a [[bus]]'s name, or "modbus+tcp://host:502"`, key, s.Forward)
		}
		for _, u := range s.UnitIDs {
			if !contains(target.UnitIDs, u) {
				return fmt.Errorf("%s: units: unit %d is not served by bus %q, where forward sends it", key, u, target.Name)
			}
		}
	}
	return nil
}

// isModbusTCP reports whether a port or forward names a Modbus TCP device
// (modbus+tcp://host:port).
func isModbusTCP(port string) bool {
	w, _, _ := ParsePort(port)
	return w == ModbusTCP
}
