package config

import (
	"errors"
	"fmt"
	"net"
	"strings"
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
