package serialport

import (
	"bytes"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestReadMinKeepsVMINForTheLastBytes: when the rest of a frame is due
// and only its last byte or two are missing, the read hands on what has
// come at once and the next waits for the rest at VMIN 1, where the
// terminal stays; only a larger shortfall sets VMIN to what is missing.
func TestReadMinKeepsVMINForTheLastBytes(t *testing.T) {
	line, gw := openPty(t, Settings{Baud: 19200, DataBits: 8, Parity: 'N', StopBits: 1})
	p := gw.(*pollPort)
	vmin := func() int {
		t.Helper()
		tio, err := unix.IoctlGetTermios(p.fd, unix.TCGETS)
		if err != nil {
			t.Fatal(err)
		}
		return int(tio.Cc[unix.VMIN])
	}
	buf := make([]byte, 64)
	gw.SetReadTimeout(time.Second)

	// The terminal rests at VMIN 1 once a read has waited for a byte.
	p.SetReadMin(1, time.Time{})
	line.Device.Write([]byte{0})
	if n, err := gw.Read(buf); n != 1 || err != nil {
		t.Fatalf("a byte: %d, %v", n, err)
	}
	if got := vmin(); got != 1 {
		t.Fatalf("VMIN %d after waiting for a byte, want 1", got)
	}

	// Ten asked for, eight there when they are due: the eight, at once.
	line.Device.Write([]byte{1, 2, 3, 4, 5, 6, 7, 8})
	time.Sleep(20 * time.Millisecond) // the pty has them
	p.SetReadMin(10, time.Now())
	start := time.Now()
	n, err := gw.Read(buf)
	if err != nil || !bytes.Equal(buf[:n], []byte{1, 2, 3, 4, 5, 6, 7, 8}) {
		t.Fatalf("eight of ten: % X, %v", buf[:n], err)
	}
	if d := time.Since(start); d > 500*time.Millisecond { // waiting would take the 1 s timeout
		t.Fatalf("eight of ten took %v: the read waited for the rest", d)
	}
	// The last two, waited for at VMIN 1.
	go func() {
		time.Sleep(20 * time.Millisecond)
		line.Device.Write([]byte{9, 10})
	}()
	p.SetReadMin(2, time.Now())
	var got []byte
	for len(got) < 2 {
		n, err := gw.Read(buf)
		if err != nil || n == 0 {
			t.Fatalf("the last two: %d, %v after % X", n, err, got)
		}
		got = append(got, buf[:n]...)
		p.SetReadMin(2-len(got), time.Now())
	}
	if !bytes.Equal(got, []byte{9, 10}) {
		t.Fatalf("the last two: % X", got)
	}
	if got := vmin(); got != 1 {
		t.Fatalf("VMIN %d after the last two bytes, want 1 (it was changed)", got)
	}

	// Ten asked for, five there: VMIN waits for all ten.
	line.Device.Write([]byte{1, 2, 3, 4, 5})
	time.Sleep(20 * time.Millisecond)
	go func() {
		time.Sleep(20 * time.Millisecond)
		line.Device.Write([]byte{6, 7, 8, 9, 10})
	}()
	p.SetReadMin(10, time.Now())
	if n, err := gw.Read(buf); err != nil || !bytes.Equal(buf[:n], []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}) {
		t.Fatalf("five of ten, then five more: % X, %v", buf[:n], err)
	}
	if got := vmin(); got != 10 {
		t.Fatalf("VMIN %d for five missing, want 10", got)
	}
}

// TestWaitLeavesTheTerminalDisarmed: a read arms the terminal in the
// port's epoll set only while it waits, whether the wait ends on a byte
// or on its timeout; bytes that arrive while no read waits leave the set
// quiet (they would wake the runtime's poller), and the next read still
// waits for its byte.
func TestWaitLeavesTheTerminalDisarmed(t *testing.T) {
	line, gw := openPty(t, Settings{Baud: 19200, DataBits: 8, Parity: 'N', StopBits: 1})
	p := gw.(*pollPort)
	quiet := func(when string) {
		t.Helper()
		time.Sleep(20 * time.Millisecond) // the pty has handed on what was written
		var ev [2]unix.EpollEvent
		if n, err := rawEpollPoll(p.epfd, ev[:]); n != 0 || err != nil {
			t.Fatalf("%s: the set is readable (%d events: %+v, %v)", when, n, ev[:max(n, 0)], err)
		}
	}
	buf := make([]byte, 16)
	p.SetReadMin(1, time.Time{})
	gw.SetReadTimeout(30 * time.Millisecond)
	// A wait that times out.
	if n, err := gw.Read(buf); n != 0 || err != nil {
		t.Fatalf("nothing sent: %d, %v", n, err)
	}
	line.Device.Write([]byte{1})
	quiet("a byte after a wait that timed out")
	gw.SetReadTimeout(time.Second)
	if n, err := gw.Read(buf); n != 1 || err != nil || buf[0] != 1 {
		t.Fatalf("the byte: % X, %v", buf[:n], err)
	}
	// A wait that ends on its byte.
	go func() {
		time.Sleep(20 * time.Millisecond)
		line.Device.Write([]byte{2})
	}()
	if n, err := gw.Read(buf); n != 1 || err != nil || buf[0] != 2 {
		t.Fatalf("a byte waited for: % X, %v", buf[:n], err)
	}
	line.Device.Write([]byte{3})
	quiet("a byte after a wait that ended on one")
	if n, err := gw.Read(buf); n != 1 || err != nil || buf[0] != 3 {
		t.Fatalf("the next byte: % X, %v", buf[:n], err)
	}
}
