package serialport

import (
	"bytes"
	"testing"
	"time"
)

// openPty makes a pty and opens its path as the gateway would; both are
// closed when the test ends.
func openPty(t *testing.T, s Settings) (*Pty, Port) {
	t.Helper()
	line, err := NewPty()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { line.Close() })
	gw, err := Open(line.Path, s)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gw.Close() })
	return line, gw
}

func TestPtyBothWays(t *testing.T) {
	line, gw := openPty(t, Settings{Baud: 19200, DataBits: 8, Parity: 'E', StopBits: 1})

	// A read with nothing to read times out with 0, nil on both ends.
	for _, p := range []Port{gw, line.Device} {
		p.SetReadTimeout(10 * time.Millisecond)
		if n, err := p.Read(make([]byte, 8)); n != 0 || err != nil {
			t.Fatalf("idle read: %d, %v", n, err)
		}
	}
	check := func(from, to Port, msg []byte) {
		t.Helper()
		if _, err := from.Write(msg); err != nil {
			t.Fatal(err)
		}
		to.SetReadTimeout(time.Second)
		got := make([]byte, 0, len(msg))
		for len(got) < len(msg) {
			buf := make([]byte, 64)
			n, err := to.Read(buf)
			if err != nil || n == 0 {
				t.Fatalf("read: %d, %v", n, err)
			}
			got = append(got, buf[:n]...)
		}
		if !bytes.Equal(got, msg) {
			t.Fatalf("got % X, want % X", got, msg)
		}
	}
	// Raw mode: CR, LF, XON/XOFF and 0xFF pass unchanged.
	msg := []byte{0x01, 0x0D, 0x0A, 0x11, 0x13, 0xFF, 0x00, 0x7F}
	check(gw, line.Device, msg)
	check(line.Device, gw, msg)

	line.Device.Write([]byte{1, 2, 3})
	time.Sleep(20 * time.Millisecond)
	if err := gw.ResetInputBuffer(); err != nil {
		t.Fatal(err)
	}
	gw.SetReadTimeout(10 * time.Millisecond)
	if n, _ := gw.Read(make([]byte, 8)); n != 0 {
		t.Fatalf("ResetInputBuffer left %d bytes", n)
	}
}

func TestSettings(t *testing.T) {
	good := Settings{Baud: 19200, DataBits: 8, Parity: 'E', StopBits: 1}
	if err := good.Validate(); err != nil || good.CharBits() != 11 {
		t.Fatalf("8E1: %v, %d bits", err, good.CharBits())
	}
	if n := (Settings{Baud: 9600, DataBits: 8, Parity: 'N', StopBits: 1}).CharBits(); n != 10 {
		t.Fatalf("8N1: %d bits", n)
	}
	for _, bad := range []Settings{{Baud: 0, DataBits: 8, Parity: 'N', StopBits: 1}, {Baud: 9600, DataBits: 9, Parity: 'N', StopBits: 1}, {Baud: 9600, DataBits: 8, Parity: 'X', StopBits: 1}, {Baud: 9600, DataBits: 8, Parity: 'N', StopBits: 3}} {
		if bad.Validate() == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}

// TestPacedLine: 20 bytes at 1 ms a character take about 20 ms to cross,
// and arrive unchanged in both directions.
func TestPacedLine(t *testing.T) {
	l, err := NewPacedLine(time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	s := Settings{Baud: 9600, DataBits: 8, Parity: 'N', StopBits: 1}
	m, err := Open(l.Path, s)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	d, err := Open(l.DevicePath, s)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	msg := []byte("0123456789abcdefghij")
	for _, dir := range [][2]Port{{m, d}, {d, m}} {
		start := time.Now()
		dir[0].Write(msg)
		var got []byte
		buf := make([]byte, 64)
		dir[1].SetReadTimeout(time.Second)
		for len(got) < len(msg) {
			n, err := dir[1].Read(buf)
			if err != nil || n == 0 {
				t.Fatalf("read: %d %v", n, err)
			}
			got = append(got, buf[:n]...)
		}
		took := time.Since(start)
		if !bytes.Equal(got, msg) {
			t.Fatalf("got %q", got)
		}
		// Not a timing assertion on the machine's speed: only that the
		// pacer did not deliver faster than the wire it stands for.
		if took < 20*time.Millisecond {
			t.Fatalf("20 characters of 1 ms crossed in %v", took)
		}
	}
}

// TestZeroTimeoutReadsWithoutWaiting: a zero read timeout takes what is
// there and returns at once when nothing is, on both ends of a pty.
func TestZeroTimeoutReadsWithoutWaiting(t *testing.T) {
	line, gw := openPty(t, Settings{Baud: 19200, DataBits: 8, Parity: 'N', StopBits: 1})
	buf0 := make([]byte, 16)
	for _, dir := range [][2]Port{{gw, line.Device}, {line.Device, gw}} {
		from, to := dir[0], dir[1]
		// A read that timed out leaves its deadline behind: the
		// zero-timeout read must not trip over it.
		to.SetReadTimeout(time.Millisecond)
		if n, err := to.Read(buf0); n != 0 || err != nil {
			t.Fatalf("timed out: %d, %v", n, err)
		}
		to.SetReadTimeout(0)
		buf := make([]byte, 16)
		start := time.Now()
		if n, err := to.Read(buf); n != 0 || err != nil {
			t.Fatalf("empty: %d, %v", n, err)
		}
		if d := time.Since(start); d > time.Second {
			t.Fatalf("a zero timeout waited %v", d)
		}
		from.Write([]byte{1, 2, 3})
		var got []byte
		for deadline := time.Now().Add(2 * time.Second); len(got) < 3 && time.Now().Before(deadline); {
			n, err := to.Read(buf)
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, buf[:n]...)
		}
		if !bytes.Equal(got, []byte{1, 2, 3}) {
			t.Fatalf("got % X", got)
		}
	}
}

// TestReadMin: a port whose reads wait for the rest of a frame still
// returns what came when the rest does not, and returns it whole when it
// comes in pieces.
func TestReadMin(t *testing.T) {
	line, gw := openPty(t, Settings{Baud: 19200, DataBits: 8, Parity: 'N', StopBits: 1})
	mr, ok := gw.(interface {
		SetReadMin(int, time.Time) error
	})
	if !ok {
		t.Skip("this platform's ports read a byte at a time")
	}
	buf := make([]byte, 64)
	read := func(want int) []byte {
		t.Helper()
		var got []byte
		for deadline := time.Now().Add(2 * time.Second); len(got) < want && time.Now().Before(deadline); {
			n, err := gw.Read(buf)
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, buf[:n]...)
		}
		return got
	}
	mr.SetReadMin(10, time.Time{})
	gw.SetReadTimeout(50 * time.Millisecond)

	// Three of ten bytes, then silence: the read returns the three at its
	// timeout, and then nothing.
	line.Device.Write([]byte{1, 2, 3})
	if got := read(3); !bytes.Equal(got, []byte{1, 2, 3}) {
		t.Fatalf("a short frame: got % X", got)
	}
	if n, err := gw.Read(buf); n != 0 || err != nil {
		t.Fatalf("silence: %d, %v", n, err)
	}

	// Ten bytes in pieces arrive complete and in order.
	go func() {
		for i := range byte(10) {
			line.Device.Write([]byte{0x10 + i})
			time.Sleep(time.Millisecond)
		}
	}()
	if got := read(10); !bytes.Equal(got, []byte{0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19}) {
		t.Fatalf("in pieces: got % X", got)
	}

	// A zero timeout takes what is there without waiting for the rest.
	mr.SetReadMin(5, time.Time{})
	gw.SetReadTimeout(0)
	line.Device.Write([]byte{7})
	var got []byte
	for deadline := time.Now().Add(2 * time.Second); len(got) == 0 && time.Now().Before(deadline); {
		n, _ := gw.Read(buf)
		got = append(got, buf[:n]...)
	}
	if !bytes.Equal(got, []byte{7}) {
		t.Fatalf("zero timeout: got % X", got)
	}

	// An answer's first bytes with a due time: the read does not look
	// before it, and then takes what has come; if nothing has, it waits
	// for the first byte as usual.
	mr.SetReadMin(1, time.Now().Add(30*time.Millisecond))
	gw.SetReadTimeout(time.Second)
	line.Device.Write([]byte{1, 2, 3})
	start := time.Now()
	if got := read(3); !bytes.Equal(got, []byte{1, 2, 3}) || time.Since(start) < 25*time.Millisecond {
		t.Fatalf("first bytes before they were due: got % X after %v, want 01 02 03 after 30ms", got, time.Since(start))
	}
	mr.SetReadMin(1, time.Now().Add(10*time.Millisecond))
	go func() {
		time.Sleep(40 * time.Millisecond)
		line.Device.Write([]byte{4})
	}()
	if got := read(1); !bytes.Equal(got, []byte{4}) {
		t.Fatalf("first byte after it was due: got % X", got)
	}
}
