// Package tcpdevice makes a Modbus TCP device a line: port =
// "modbus+tcp://host:502" on a [[bus]]. Devices that take one connection
// at a time (solar inverters, energy meters) are shared among every
// master through the gateway, which is their only client.
//
// The line's owner (rtu.Bus) and its queue, fairness, retries, offline
// rule and capture stay as they are: a Port speaks to it in RTU frames
// and to the device in MBAP. Each request written goes out under a
// transaction id of the gateway's own (the masters' ids never reach the
// device; each master's answer goes back under its own); an answer with
// any other id is a late one, dropped; the answer to the request in
// flight is handed to the line as an RTU frame. A connection that fails
// is an I/O error: the line reconnects with backoff, down meanwhile.
package tcpdevice

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/mcpgw/mcpgw/pkg/crc"
	"github.com/mcpgw/mcpgw/pkg/rtu"
	"github.com/mcpgw/mcpgw/pkg/tcp"
	"github.com/mcpgw/mcpgw/pkg/wire/netserial"
)

// Port is the connection to the device.
type Port struct {
	conn    net.Conn
	r       *bufio.Reader
	timeout time.Duration
	tid     uint16 // of the request in flight
	pending []byte // the answer, as an RTU frame, not yet read
	adu     []byte
}

// Dial connects to the Modbus TCP device at addr (host:port) within
// timeout.
func Dial(addr string, timeout time.Duration) (*Port, error) {
	c, err := netserial.DialTCP(addr, timeout)
	if err != nil {
		return nil, fmt.Errorf("modbus tcp device %s: %w", addr, err)
	}
	return &Port{conn: c, r: bufio.NewReaderSize(c, 2*tcp.MaxADU), timeout: time.Second,
		adu: make([]byte, 0, tcp.MaxADU)}, nil
}

// Write sends the RTU frame b (unit, PDU, CRC) as an MBAP request under
// the next transaction id.
func (p *Port) Write(b []byte) (int, error) {
	if len(b) < rtu.MinADU || !crc.Valid(b) {
		return 0, fmt.Errorf("modbus tcp device: not an RTU frame: % X", b)
	}
	p.tid++
	p.pending = p.pending[:0]
	p.adu = tcp.AppendADU(p.adu[:0], p.tid, b[0], b[1:len(b)-crc.Size])
	p.conn.SetWriteDeadline(time.Now().Add(time.Second))
	if _, err := p.conn.Write(p.adu); err != nil {
		return 0, err
	}
	return len(b), nil
}

// Read returns the answer to the request in flight, as an RTU frame,
// waiting up to the read timeout for it (0, nil if it does not come).
func (p *Port) Read(b []byte) (int, error) {
	if len(p.pending) > 0 {
		n := copy(b, p.pending)
		p.pending = p.pending[n:]
		return n, nil
	}
	p.conn.SetReadDeadline(time.Now().Add(p.timeout))
	for {
		hdr, err := p.r.Peek(tcp.HeaderLen)
		if err != nil {
			return 0, timeoutIsNothing(err)
		}
		h, err := tcp.ParseHeader(hdr)
		if err != nil {
			return 0, fmt.Errorf("modbus tcp device: %w", err) // the stream is lost: reconnect
		}
		frame, err := p.r.Peek(tcp.HeaderLen + h.PDULen())
		if err != nil {
			return 0, timeoutIsNothing(err)
		}
		pdu := frame[tcp.HeaderLen:]
		late := h.TID != p.tid
		if !late {
			p.pending = rtu.AppendADU(p.pending[:0], h.Unit, pdu)
		}
		p.r.Discard(len(frame))
		if late {
			continue // the answer to a request the line gave up on
		}
		n := copy(b, p.pending)
		p.pending = p.pending[n:]
		return n, nil
	}
}

func timeoutIsNothing(err error) error {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return nil
	}
	return err
}

// SetReadTimeout sets how long a Read waits.
func (p *Port) SetReadTimeout(d time.Duration) error {
	p.timeout = max(d, time.Microsecond)
	return nil
}

// ResetInputBuffer drops whatever has arrived.
func (p *Port) ResetInputBuffer() error {
	p.pending = p.pending[:0]
	p.r.Discard(p.r.Buffered())
	return nil
}

// Close closes the connection.
func (p *Port) Close() error { return p.conn.Close() }
