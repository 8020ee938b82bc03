package netserial

import (
	"bytes"
	"net"
	"testing"
	"time"
)

// TestPortActsAsASerialPort: a read that times out returns 0 and no
// error, as a serial port's does; the input can be reset; a server that
// closes is an error.
func TestPortActsAsASerialPort(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	server := make(chan net.Conn, 1)
	go func() {
		c, _ := l.Accept()
		server <- c
	}()
	p, err := Dial(l.Addr().String(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	s := <-server
	p.SetReadTimeout(20 * time.Millisecond)
	buf := make([]byte, 16)
	start := time.Now()
	if n, err := p.Read(buf); n != 0 || err != nil || time.Since(start) < 15*time.Millisecond {
		t.Fatalf("a read with nothing to read: %d, %v after %v", n, err, time.Since(start))
	}
	s.Write([]byte("stale"))
	time.Sleep(20 * time.Millisecond)
	if err := p.ResetInputBuffer(); err != nil {
		t.Fatal(err)
	}
	s.Write([]byte{1, 3})
	if n, err := p.Read(buf); err != nil || !bytes.Equal(buf[:n], []byte{1, 3}) {
		t.Fatalf("after the reset: % X, %v", buf[:n], err)
	}
	if _, err := p.Write([]byte{1, 3, 0, 0, 0, 1, 0x84, 0x0A}); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 8)
	s.SetReadDeadline(time.Now().Add(time.Second))
	if n, _ := s.Read(got); n != 8 {
		t.Fatalf("the server got %d bytes", n)
	}
	s.Close()
	if _, err := p.Read(buf); err == nil {
		t.Fatal("a read after the server closed: no error")
	}
	if _, err := Dial("127.0.0.1:1", 200*time.Millisecond); err == nil {
		t.Fatal("dialled a port nobody listens on")
	}
}
