package tcp

import (
	"io"
	"net"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// quiet wraps a plain TCP connection so that its reads and writes go to
// the kernel without telling the scheduler (RawSyscall), as the serial
// port's do (pkg/wire/serialport). The socket is non-blocking and the waiting
// is the runtime poller's, so no call can block; through the ordinary path
// each call made after the process was idle wakes the scheduler's monitor
// thread, which then naps in 20 µs steps until the process is idle again:
// on a slow line two such wakes a transaction, a quarter of the gateway's
// context switches. Deadlines work as before: RawConn honours them.
//
// One goroutine reads and one writes at a time (the connection's), as
// the server does; a read and a write may overlap.
func quiet(nc net.Conn) net.Conn {
	tc, ok := nc.(*net.TCPConn)
	if !ok {
		return nc
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nc
	}
	q := &quietConn{TCPConn: tc, rc: rc}
	// Bound once: a closure made per call would cost allocations on
	// every transaction.
	q.readFn, q.writeFn = q.readSome, q.writeAll
	return q
}

type quietConn struct {
	*net.TCPConn
	rc syscall.RawConn

	readFn func(fd uintptr) bool
	rbuf   []byte
	rn     int
	rerr   unix.Errno

	writeFn func(fd uintptr) bool
	wbuf    []byte
	wdone   int
	werr    unix.Errno
}

func (c *quietConn) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	c.rbuf = b
	err := c.rc.Read(c.readFn)
	c.rbuf = nil
	switch {
	case err != nil:
		return 0, c.opError("read", err)
	case c.rerr != 0:
		return 0, c.opError("read", c.rerr)
	case c.rn == 0:
		return 0, io.EOF
	}
	return c.rn, nil
}

// readSome reads what is there; it reports false (wait) if nothing is.
func (c *quietConn) readSome(fd uintptr) bool {
	for {
		r, _, e := unix.RawSyscall(unix.SYS_READ, fd, uintptr(unsafe.Pointer(&c.rbuf[0])), uintptr(len(c.rbuf)))
		if e == unix.EINTR {
			continue
		}
		c.rn, c.rerr = int(r), e
		return e != unix.EAGAIN
	}
}

func (c *quietConn) Write(b []byte) (int, error) {
	c.wbuf, c.wdone, c.werr = b, 0, 0
	err := c.rc.Write(c.writeFn)
	c.wbuf = nil
	switch {
	case err != nil:
		return c.wdone, c.opError("write", err)
	case c.werr != 0:
		return c.wdone, c.opError("write", c.werr)
	}
	return c.wdone, nil
}

// writeAll writes until all is written or the socket is full (false:
// wait for room).
func (c *quietConn) writeAll(fd uintptr) bool {
	for c.wdone < len(c.wbuf) {
		r, _, e := unix.RawSyscall(unix.SYS_WRITE, fd, uintptr(unsafe.Pointer(&c.wbuf[c.wdone])), uintptr(len(c.wbuf)-c.wdone))
		switch e {
		case 0:
			c.wdone += int(r)
		case unix.EINTR:
		case unix.EAGAIN:
			return false
		default:
			c.werr = e
			return true
		}
	}
	return true
}

func (c *quietConn) opError(op string, err error) error {
	return &net.OpError{Op: op, Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}
