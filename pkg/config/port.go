package config

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"time"
)

// Wire is the kind of port a [[bus]] or [[slave_line]] names.
type Wire int

const (
	Serial       Wire = iota // a serial device: "/dev/ttyUSB0", "COM3"
	SerialServer             // "tcp://host:port": a serial device server, the line's bytes over TCP
	ModbusTCP                // "modbus+tcp://host:port": a Modbus TCP device, the line's frames as MBAP
)

// ParsePort reads a port: its kind, and the device path or host:port it
// names. It is the one place that knows the schemes. A port of a known
// scheme with a bad address has its kind and an error.
func ParsePort(port string) (Wire, string, error) {
	scheme, rest, ok := strings.Cut(port, "://")
	if !ok {
		if port == "" {
			return Serial, "", errors.New("port: required, the serial device such as \"/dev/ttyUSB0\"")
		}
		return Serial, port, nil
	}
	switch scheme {
	case "tcp":
		if _, _, err := net.SplitHostPort(rest); err != nil {
			return SerialServer, "", fmt.Errorf("port %q: want tcp://host:port, the serial device server's address", port)
		}
		return SerialServer, rest, nil
	case "modbus+tcp":
		if _, _, err := net.SplitHostPort(rest); err != nil {
			return ModbusTCP, "", fmt.Errorf("port %q: want modbus+tcp://host:port, the device's address (port 502 by convention)", port)
		}
		return ModbusTCP, rest, nil
	}
	return -1, "", fmt.Errorf("port %q: %s:// is not a kind of line this gateway knows; a serial device (\"/dev/ttyUSB0\"), a serial device server (\"tcp://10.0.0.20:4001\") or a Modbus TCP device (\"modbus+tcp://10.0.0.30:502\")", port, scheme)
}

// checkSerial checks a line's character format, naming the key at fault.
func checkSerial(baud, dataBits int, parity string, stopBits int) error {
	switch {
	case baud <= 0:
		return fmt.Errorf("baud %d: must be a positive bit rate such as 9600 or 19200", baud)
	case dataBits < 5 || dataBits > 8:
		return fmt.Errorf("data_bits %d: must be 5, 6, 7 or 8 (Modbus RTU uses 8)", dataBits)
	case parity != "N" && parity != "E" && parity != "O":
		return fmt.Errorf("parity %q: must be \"N\", \"E\" or \"O\"", parity)
	case stopBits != 1 && stopBits != 2:
		return fmt.Errorf("stop_bits %d: must be 1 or 2", stopBits)
	}
	return nil
}

// checkPortKeys checks the keys of a [[bus]]'s port: RS-485 mode on a
// serial port only, a connection's pause on a network line only.
func (b *Bus) checkPortKeys() error {
	if b.RS485 && b.Wire != Serial {
		return fmt.Errorf("rs485: only on a serial port, not on %q (a serial device server sets its own RS-485 mode)", b.Port)
	}
	switch b.RTSOnSend {
	case "":
		if b.RS485 {
			b.RTSOnSend = "high"
		}
	case "high", "low":
	default:
		return fmt.Errorf("rts_on_send %q: want \"high\" or \"low\" (the RTS level while sending)", b.RTSOnSend)
	}
	for _, d := range []struct {
		key string
		v   Duration
	}{{"rts_delay_before", b.RTSDelayBefore}, {"rts_delay_after", b.RTSDelayAfter}} {
		if d.v.Duration < 0 || d.v.Duration > 10*time.Second {
			return fmt.Errorf("%s %v: must be 0 to 10s (the kernel counts it in milliseconds)", d.key, d.v)
		}
		if d.v.Duration > 0 && !b.RS485 {
			return fmt.Errorf("%s: only with rs485 = true", d.key)
		}
	}
	if (b.RTSOnSend != "") && !b.RS485 {
		return errors.New("rts_on_send: only with rs485 = true")
	}
	if b.ConnectDelay.Duration < 0 || b.ConnectDelay.Duration > time.Minute {
		return fmt.Errorf("connect_delay %v: must be 0 to 1m", b.ConnectDelay)
	}
	if b.ConnectDelay.Duration > 0 && b.Wire == Serial {
		return fmt.Errorf("connect_delay: only on a network line (tcp:// or modbus+tcp://), not on %q", b.Port)
	}
	return nil
}

// checkQuirks checks a line's or a device's quirks, naming the key.
func checkQuirks(maxRegisters, maxBits *int, singleRegister, singleCoil string) error {
	if n := maxRegisters; n != nil && (*n < 1 || *n > 125) {
		return fmt.Errorf("max_registers %d: must be 1..125, the registers one read may ask the device for", *n)
	}
	if n := maxBits; n != nil && (*n < 1 || *n > 2000) {
		return fmt.Errorf("max_bits %d: must be 1..2000, the coils or inputs one read may ask the device for", *n)
	}
	switch singleRegister {
	case "", "fc16", "fc6":
	default:
		return fmt.Errorf("single_register_write %q: want \"fc16\" (FC 6 sent as FC 16 of one register) or \"fc6\" (FC 16 of one register sent as FC 6)", singleRegister)
	}
	switch singleCoil {
	case "", "fc15", "fc5":
	default:
		return fmt.Errorf("single_coil_write %q: want \"fc15\" (FC 5 sent as FC 15 of one coil) or \"fc5\" (FC 15 of one coil sent as FC 5)", singleCoil)
	}
	return nil
}
