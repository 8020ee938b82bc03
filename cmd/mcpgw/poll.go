package main

import (
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/goburrow/modbus"
)

// cmdPoll reads or writes one device with goburrow/modbus, an
// implementation independent of the gateway's own codec.
func cmdPoll(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("poll", flag.ContinueOnError)
	fs.SetOutput(stderr)
	tcpAddr := fs.String("tcp", "", "Modbus TCP server (a gateway), host:port")
	rtuPort := fs.String("rtu", "", "serial port, to poll a line directly")
	settings := serialFlags(fs) // with -rtu
	unit := fs.Int("unit", 1, "unit id")
	kind := fs.String("type", "holding", "holding, input, coil or discrete")
	ref := fs.Int("r", 0, "first address, zero-based")
	count := fs.Int("c", 1, "how many to read")
	write := fs.String("write", "", "comma-separated values to write from -r instead of reading")
	timeout := fs.Duration("timeout", time.Second, "answer timeout")
	n := fs.Int("n", 1, "polls to make (0: until stopped)")
	interval := fs.Duration("interval", time.Second, "pause between polls")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var client modbus.Client
	switch {
	case *tcpAddr != "" && *rtuPort == "":
		h := modbus.NewTCPClientHandler(*tcpAddr)
		h.SlaveId, h.Timeout = byte(*unit), *timeout
		defer h.Close()
		client = modbus.NewClient(h)
	case *rtuPort != "" && *tcpAddr == "":
		set, err := settings()
		if err != nil {
			return err
		}
		// Without parity the spec asks for two stop bits: the default then.
		stopSet := false
		fs.Visit(func(f *flag.Flag) { stopSet = stopSet || f.Name == "stop-bits" })
		if set.Parity == 'N' && !stopSet {
			set.StopBits = 2
		}
		h := modbus.NewRTUClientHandler(*rtuPort)
		h.SlaveId, h.Timeout = byte(*unit), *timeout
		h.BaudRate, h.DataBits, h.Parity, h.StopBits = set.Baud, set.DataBits, string(set.Parity), set.StopBits
		defer h.Close()
		client = modbus.NewClient(h)
	default:
		return usageErr("give one of -tcp host:port or -rtu /dev/PORT")
	}
	if *ref < 0 || *ref > 65535 || *count < 1 || *count > 2000 {
		return usageErr("-r must be 0..65535 and -c 1..2000")
	}
	addr, qty := uint16(*ref), uint16(*count)
	for i := 0; *n == 0 || i < *n; i++ {
		if i > 0 {
			time.Sleep(*interval)
		}
		var (
			res []byte
			err error
		)
		if *write != "" {
			res, err = pollWrite(client, *kind, addr, *write)
		} else {
			res, err = pollRead(client, *kind, addr, qty)
		}
		if err != nil {
			var me *modbus.ModbusError
			if errors.As(err, &me) {
				return fmt.Errorf("exception %#02x from unit %d: %w", me.ExceptionCode, *unit, err)
			}
			return err
		}
		printResult(stdout, *kind, addr, qty, res, *write != "")
	}
	return nil
}

func pollRead(c modbus.Client, kind string, addr, qty uint16) ([]byte, error) {
	switch kind {
	case "holding":
		return c.ReadHoldingRegisters(addr, qty)
	case "input":
		return c.ReadInputRegisters(addr, qty)
	case "coil":
		return c.ReadCoils(addr, qty)
	case "discrete":
		return c.ReadDiscreteInputs(addr, qty)
	}
	return nil, usageErr("-type %q: want holding, input, coil or discrete", kind)
}

func pollWrite(c modbus.Client, kind string, addr uint16, list string) ([]byte, error) {
	var vals []uint16
	for s := range strings.SplitSeq(list, ",") {
		v, err := strconv.ParseUint(strings.TrimSpace(s), 0, 16)
		if err != nil {
			return nil, usageErr("-write %q: values are 0..65535", s)
		}
		vals = append(vals, uint16(v))
	}
	switch kind {
	case "holding":
		if len(vals) == 1 {
			return c.WriteSingleRegister(addr, vals[0])
		}
		buf := make([]byte, 0, 2*len(vals))
		for _, v := range vals {
			buf = binary.BigEndian.AppendUint16(buf, v)
		}
		return c.WriteMultipleRegisters(addr, uint16(len(vals)), buf)
	case "coil":
		if len(vals) == 1 {
			v := uint16(0)
			if vals[0] != 0 {
				v = 0xFF00
			}
			return c.WriteSingleCoil(addr, v)
		}
		buf := make([]byte, (len(vals)+7)/8)
		for i, v := range vals {
			if v != 0 {
				buf[i/8] |= 1 << (i % 8)
			}
		}
		return c.WriteMultipleCoils(addr, uint16(len(vals)), buf)
	}
	return nil, usageErr("-write works with -type holding or coil")
}

func printResult(w io.Writer, kind string, addr, qty uint16, res []byte, wrote bool) {
	if wrote {
		fmt.Fprintf(w, "written: % X\n", res)
		return
	}
	for i := range int(qty) {
		switch kind {
		case "holding", "input":
			if 2*i+1 < len(res) {
				fmt.Fprintf(w, "[%d]\t%d\n", int(addr)+i, binary.BigEndian.Uint16(res[2*i:]))
			}
		default:
			if i/8 < len(res) {
				fmt.Fprintf(w, "[%d]\t%d\n", int(addr)+i, res[i/8]>>(i%8)&1)
			}
		}
	}
}
