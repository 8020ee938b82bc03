// Package netserial reaches a serial line behind a serial device server
// (Moxa NPort, USR, Lantronix in "TCP server" mode): the line's raw
// bytes over one TCP connection. A Port behaves as a serial port does for
// the line's owner (rtu.Bus): reads wait at most their timeout and then
// return what came, writes go out at once, and a connection that fails
// is an I/O error, after which the line is reopened (reconnected) with
// backoff and reported down meanwhile. The line's timing rules apply to
// the bytes as they arrive.
package netserial

import (
	"errors"
	"fmt"
	"net"
	"os"
	"time"
)

// Port is a connection to a serial device server.
type Port struct {
	conn    net.Conn
	timeout time.Duration
}

// Dial connects to the serial device server at addr (host:port) within
// timeout.
func Dial(addr string, timeout time.Duration) (*Port, error) {
	c, err := DialTCP(addr, timeout)
	if err != nil {
		return nil, fmt.Errorf("serial device server %s: %w", addr, err)
	}
	return &Port{conn: c, timeout: time.Second}, nil
}

// DialTCP connects to addr as a line's port needs: a frame goes out at
// once (no Nagle delay), and a peer that vanished is noticed within
// seconds (keep-alive every 10 s).
func DialTCP(addr string, timeout time.Duration) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return nil, err
	}
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
		tc.SetKeepAlive(true)
		tc.SetKeepAlivePeriod(10 * time.Second)
	}
	return c, nil
}

// Read waits up to the read timeout for bytes; none by then is 0, nil,
// as a serial port's read that times out.
func (p *Port) Read(b []byte) (int, error) {
	p.conn.SetReadDeadline(time.Now().Add(p.timeout))
	n, err := p.conn.Read(b)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return n, nil
	}
	return n, err
}

// Write sends b; a server that takes nothing for a second has failed.
func (p *Port) Write(b []byte) (int, error) {
	p.conn.SetWriteDeadline(time.Now().Add(time.Second))
	return p.conn.Write(b)
}

// SetReadTimeout sets how long a Read waits.
func (p *Port) SetReadTimeout(d time.Duration) error {
	p.timeout = max(d, time.Microsecond)
	return nil
}

// ResetInputBuffer discards what has arrived and not been read (what
// comes within a millisecond).
func (p *Port) ResetInputBuffer() error {
	var buf [512]byte
	for {
		p.conn.SetReadDeadline(time.Now().Add(time.Millisecond))
		n, err := p.conn.Read(buf[:])
		if n == 0 || err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return nil
			}
			return err
		}
	}
}

// Close closes the connection.
func (p *Port) Close() error { return p.conn.Close() }
