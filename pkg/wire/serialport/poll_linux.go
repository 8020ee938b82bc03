package serialport

import (
	"errors"
	"fmt"
	"io"
	"os"
	"time"
	"unsafe"

	"go.bug.st/serial"
	"golang.org/x/sys/unix"
)

// openPolled opens path twice: once non-blocking for the bus's reads and
// writes, and once through go.bug.st/serial, which configures the port
// (raw mode, speed, format) and takes it for exclusive use. The settings
// belong to the terminal, not to a descriptor, so both see them; ours is
// opened first because exclusive use refuses later opens.
//
// Why not go.bug.st/serial's Read: it waits in select(2), so a bus
// waiting for an answer holds an OS thread in a system call, which keeps
// the Go scheduler's monitor polling every 20 µs and makes it hand the
// thread's processor around; and it wakes for every byte. On a 19200 baud
// line that was most of the gateway's CPU per transaction. A pollPort
// waits in the runtime's poller instead, and only for what the bus needs
// (see Read).
func openPolled(path string, s Settings) (Port, error) {
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_NOCTTY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	p := &pollPort{fd: fd, tfd: -1, min: 1, char: s.CharTime(), timeout: -1}
	if p.cfg, err = openConfigured(path, s); err != nil {
		p.Close()
		return nil, err
	}
	if s.RS485 != nil {
		if err := setRS485(fd, s.RS485.kernel()); err != nil {
			p.Close()
			return nil, errRS485(path, err)
		}
	}
	if err := p.initWaiter(); err != nil {
		p.Close()
		return nil, fmt.Errorf("poller: %w", err)
	}
	return p, nil
}

// setRS485 hands the kernel a struct serial_rs485 (TIOCSRS485); a
// variable, so that a test can see what the kernel would get.
var setRS485 = func(fd int, k [8]uint32) error {
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(unix.TIOCSRS485), uintptr(unsafe.Pointer(&k)))
	if errno != 0 {
		return errno
	}
	return nil
}

// pollPort is a configured serial port whose reads wait in the runtime's
// poller. The terminal is not in that poller itself: registered there, it
// would wake the poller's thread with every byte that arrives, whether
// anyone waits or not. It is in an epoll set of its own (ep), armed only
// while a read waits for it, for one event; the set, which also holds a
// timer for precise deadlines (the runtime's own timers there wake up to
// a millisecond late, more than t3.5 at 19200 baud), is what the runtime
// polls. (Arming and disarming the terminal with EPOLL_CTL_MOD is
// cheaper than adding it and taking it out for each wait, which
// allocates and frees the set's entry and hooks it into the terminal's
// wait queue each time: measured side by side on a paced 19200 line, 4
// to 7 % of the CPU per transaction.)
type pollPort struct {
	fd      int         // the terminal, non-blocking
	cfg     serial.Port // holds the settings and the exclusive use
	ep      *os.File    // epoll set: the timer always, the terminal while a read waits
	epfd    int         // ep's descriptor (not through ep.Fd, which would make it blocking)
	tfd     int         // timerfd for deadlines
	tio     *unix.Termios
	min     int           // see SetReadMin
	due     time.Time     // see SetReadMin
	late    time.Duration // how late the timer wakes us, on average
	vmin    int           // the terminal's VMIN now
	char    time.Duration // one character on the wire
	timeout time.Duration
	events  [2]unix.EpollEvent
}

func (p *pollPort) initWaiter() error {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return err
	}
	// Non-blocking, so that os.NewFile puts it in the runtime's poller.
	if err := unix.SetNonblock(epfd, true); err != nil {
		unix.Close(epfd)
		return err
	}
	p.ep, p.epfd = os.NewFile(uintptr(epfd), "serial-epoll"), epfd
	if p.tfd, err = unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC); err != nil {
		return err
	}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, p.tfd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(p.tfd)}); err != nil {
		return err
	}
	// The terminal is in the set from the start, disarmed (no events,
	// so bytes that arrive wake no one): a wait arms it for one event.
	return unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, p.fd, &unix.EpollEvent{Fd: int32(p.fd)})
}

func (p *pollPort) SetReadTimeout(t time.Duration) error { p.timeout = t; return nil }

// SetReadMin makes reads wait until n bytes are waiting or the read
// timeout passes; then they return what is there. due, if not zero, is
// when the n bytes are due (rtu.MinReader).
func (p *pollPort) SetReadMin(n int, due time.Time) error {
	p.min, p.due = max(1, n), due
	return nil
}

// Read waits for what the bus asked for in the fewest wakeups. For the
// rest of a frame (more than two bytes asked for), it first sleeps, with
// the terminal out of the poller, until the last of them is due (bytes
// come no slower than one a character time while a frame lasts): a byte
// that arrives while a read waits on the terminal wakes the poller's
// thread, even when VMIN holds back the read. Then, if only the last
// byte or two are missing, it returns what has come (the bus asks for
// the rest); if more are (an adapter's burst that comes late), it waits
// for the terminal to have min bytes (up to 255, the kernel's VMIN: the
// terminal is readable only then), or for the timeout. One or two bytes
// are waited for at VMIN 1. One or two bytes with a due time (an answer's
// first bytes, when the bus knows when they come) are slept for the same
// way first.
func (p *pollPort) Read(b []byte) (int, error) {
	if p.timeout == 0 {
		return p.readNow(b)
	}
	var deadline time.Time
	if p.timeout > 0 {
		deadline = time.Now().Add(p.timeout)
	}
	want := min(p.min, 255)
	if want <= 2 && !p.due.IsZero() {
		// The bus knows when the first bytes of an answer are due: it
		// need not look before, and then takes what has come.
		if err := p.sleepTill(p.due, deadline); err != nil {
			return 0, err
		}
	}
	if want > 2 {
		// The bus asks for more than two bytes only for the rest of a
		// frame already coming in.
		avail, err := rawIoctlInt(p.fd, unix.TIOCINQ)
		if err != nil {
			return 0, err
		}
		if avail < want {
			due := p.due
			if due.IsZero() {
				due = time.Now().Add(time.Duration(want-avail) * p.char)
			}
			if err := p.sleepTill(due, deadline); err != nil {
				return 0, err
			}
			if avail, err = rawIoctlInt(p.fd, unix.TIOCINQ); err != nil {
				return 0, err
			}
		}
		if avail >= want || !deadline.IsZero() && !time.Now().Before(deadline) || avail > 0 && want-avail <= 2 {
			// All there, or the time is up, or the last byte or two
			// are still to come: the bus has what is here and asks
			// for the rest (see below).
			return p.readNow(b)
		}
	} else if n, err := p.readNow(b); n > 0 || err != nil {
		return n, err
	}
	// One or two bytes are waited for at VMIN 1, which is where the
	// terminal stays: each change of VMIN is a system call that wakes the
	// terminal's worker thread, which on a busy machine then takes the
	// CPU from the line's thread, and a change costs two (there and
	// back), where the second byte costs at most one wakeup more.
	vmin := want
	if want <= 2 {
		vmin = 1
	}
	if err := p.setVMIN(vmin); err != nil {
		return 0, err
	}
	if err := p.wait(deadline, true); err != nil {
		return 0, err
	}
	return p.readNow(b)
}

// sleepTill sleeps until bytes are due, no later than deadline (zero:
// none): it wakes when they are due, not when the timer's own lateness
// has been added to that.
func (p *pollPort) sleepTill(due, deadline time.Time) error {
	until := due.Add(-p.late)
	if !deadline.IsZero() && deadline.Before(until) {
		until = deadline
	}
	return p.sleep(until)
}

// sleep waits until t without watching the terminal, and learns how late
// the timer wakes (a moving average, at most a character time), which the
// next sleep takes off.
func (p *pollPort) sleep(t time.Time) error {
	if time.Until(t) <= 0 {
		return nil
	}
	if err := p.wait(t, false); err != nil {
		return err
	}
	if late := time.Since(t); late >= 0 {
		p.late += (min(late, p.char) - p.late) / 8
	}
	return nil
}

// wait parks the goroutine in the runtime's poller until deadline (zero:
// none) or, if tty, until the terminal is readable.
func (p *pollPort) wait(deadline time.Time, tty bool) error {
	var spec unix.ItimerSpec
	if !deadline.IsZero() {
		d := time.Until(deadline)
		if d <= 0 {
			return nil
		}
		spec.Value = unix.NsecToTimespec(d.Nanoseconds())
	}
	epfd := p.epfd
	rc, err := p.ep.SyscallConn()
	if err != nil {
		return err
	}
	if err := rawTimerfdSettime(p.tfd, &spec); err != nil {
		return err
	}
	if tty {
		if err := rawEpollCtl(epfd, unix.EPOLL_CTL_MOD, p.fd, &unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLONESHOT, Fd: int32(p.fd)}); err != nil {
			return err
		}
	}
	ttyFired := false
	var werr error
	if err := rc.Read(func(uintptr) bool {
		n, err := rawEpollPoll(epfd, p.events[:])
		if err == unix.EINTR {
			return false
		}
		for _, ev := range p.events[:max(n, 0)] {
			if ev.Fd == int32(p.fd) {
				ttyFired = true
			}
		}
		werr = err
		return n > 0 || err != nil
	}); err != nil {
		return err
	}
	// Disarm the timer and take its expiry, if it came, and the terminal
	// if it did not fire (a one-shot event disarms itself), so the set is
	// quiet for the next wait.
	if tty && !ttyFired {
		rawEpollCtl(epfd, unix.EPOLL_CTL_MOD, p.fd, &unix.EpollEvent{Fd: int32(p.fd)})
	}
	rawTimerfdSettime(p.tfd, &unix.ItimerSpec{})
	var exp [8]byte
	rawRead(p.tfd, exp[:])
	return werr
}

// setVMIN sets the terminal's VMIN (with VTIME zero): it is readable,
// for poll and epoll, only once n bytes are waiting.
func (p *pollPort) setVMIN(n int) error {
	if n == p.vmin {
		return nil
	}
	if p.tio == nil {
		t, err := unix.IoctlGetTermios(p.fd, unix.TCGETS)
		if err != nil {
			return err
		}
		p.tio = t
	}
	p.tio.Cc[unix.VMIN], p.tio.Cc[unix.VTIME] = uint8(n), 0
	if err := rawIoctlPtr(p.fd, unix.TCSETS, unsafe.Pointer(p.tio)); err != nil {
		p.tio = nil
		return err
	}
	p.vmin = n
	return nil
}

// readNow reads what is waiting, without waiting.
func (p *pollPort) readNow(b []byte) (int, error) {
	for {
		n, err := rawRead(p.fd, b)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			return 0, nil
		case err != nil:
			return 0, err
		case n == 0 && len(b) > 0:
			return 0, io.EOF // a pty whose other end closed, a USB adapter unplugged
		}
		return n, nil
	}
}

// writeStuck is how long Write waits for a terminal whose output buffer
// stays full before it reports the line as failed.
const writeStuck = time.Second

func (p *pollPort) Write(b []byte) (int, error) {
	done := 0
	var stuck time.Time
	for done < len(b) {
		n, err := rawWrite(p.fd, b[done:])
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			// The terminal's output buffer is full: a line that does
			// not drain (flow control, a stuck adapter). Give it a
			// moment rather than spin, and not for ever.
			if stuck.IsZero() {
				stuck = time.Now()
			} else if time.Since(stuck) > writeStuck {
				return done, fmt.Errorf("the output buffer stayed full for %v", writeStuck)
			}
			time.Sleep(p.char)
			continue
		case err != nil:
			return done, err
		}
		done += n
	}
	return done, nil
}

// ResetInputBuffer discards whatever is waiting to be read.
func (p *pollPort) ResetInputBuffer() error {
	return unix.IoctlSetInt(p.fd, unix.TCFLSH, unix.TCIFLUSH)
}

func (p *pollPort) Close() error {
	var errs []error
	if p.ep != nil {
		errs = append(errs, p.ep.Close())
	}
	if p.tfd >= 0 {
		errs = append(errs, unix.Close(p.tfd))
	}
	if p.cfg != nil {
		errs = append(errs, p.cfg.Close())
	}
	errs = append(errs, unix.Close(p.fd))
	return errors.Join(errs...)
}

// The port's system calls never block (the descriptors are non-blocking,
// and the waiting is the runtime poller's), so they go to the kernel
// without telling the scheduler (unix.RawSyscall). Through the ordinary
// path every call made after the process was idle wakes the scheduler's
// monitor thread, which then naps in 20 µs steps until the process is idle
// again: on a slow line, with a few bursts of calls per transaction, most
// of the gateway's context switches.

func rawErr(e unix.Errno) error {
	if e != 0 {
		return e
	}
	return nil
}

func rawRead(fd int, b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	n, _, e := unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
	return int(n), rawErr(e)
}

func rawWrite(fd int, b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	n, _, e := unix.RawSyscall(unix.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
	return int(n), rawErr(e)
}

func rawIoctlInt(fd int, req uint) (int, error) {
	var v int32
	_, _, e := unix.RawSyscall(unix.SYS_IOCTL, uintptr(fd), uintptr(req), uintptr(unsafe.Pointer(&v)))
	return int(v), rawErr(e)
}

func rawIoctlPtr(fd int, req uint, arg unsafe.Pointer) error {
	_, _, e := unix.RawSyscall(unix.SYS_IOCTL, uintptr(fd), uintptr(req), uintptr(arg))
	return rawErr(e)
}

func rawTimerfdSettime(fd int, spec *unix.ItimerSpec) error {
	_, _, e := unix.RawSyscall6(unix.SYS_TIMERFD_SETTIME, uintptr(fd), 0, uintptr(unsafe.Pointer(spec)), 0, 0, 0)
	return rawErr(e)
}

func rawEpollCtl(epfd, op, fd int, ev *unix.EpollEvent) error {
	_, _, e := unix.RawSyscall6(unix.SYS_EPOLL_CTL, uintptr(epfd), uintptr(op), uintptr(fd), uintptr(unsafe.Pointer(ev)), 0, 0)
	return rawErr(e)
}

// rawEpollPoll collects the set's events without waiting (timeout 0).
func rawEpollPoll(epfd int, events []unix.EpollEvent) (int, error) {
	n, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(epfd), uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), 0, 0, 0)
	return int(n), rawErr(e)
}

// Check reports an error if the terminal has hung up or failed (a USB
// adapter unplugged, the other end of a pseudo-terminal closed), without
// reading from it (rtu.Checker).
func (p *pollPort) Check() error {
	fds := []unix.PollFd{{Fd: int32(p.fd)}}
	n, err := unix.Poll(fds, 0)
	if err != nil {
		if err == unix.EINTR {
			return nil
		}
		return fmt.Errorf("poll: %w", err)
	}
	if n > 0 && fds[0].Revents&(unix.POLLHUP|unix.POLLERR|unix.POLLNVAL) != 0 {
		return errors.New("the port hung up")
	}
	return nil
}
