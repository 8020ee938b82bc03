package tcpdevice

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"

	"github.com/mcpgw/mcpgw/pkg/rtu"
	"github.com/mcpgw/mcpgw/pkg/tcp"
)

// TestPort: the line's RTU frame goes out as MBAP under the gateway's
// own transaction id; the answer comes back as an RTU frame; a late
// answer (another id) is dropped; nothing yet is 0, nil.
func TestPort(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	dev := make(chan net.Conn, 1)
	go func() { c, _ := l.Accept(); dev <- c }()
	p, err := Dial(l.Addr().String(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	d := <-dev
	p.SetReadTimeout(50 * time.Millisecond)
	buf := make([]byte, 300)
	if n, err := p.Read(buf); n != 0 || err != nil {
		t.Fatalf("nothing to read: %d %v", n, err)
	}
	for want := uint16(1); want <= 2; want++ {
		req := []byte{0x03, 0x00, 0x6B, 0x00, 0x03} // spec 6.3
		if _, err := p.Write(rtu.AppendADU(nil, 17, req)); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, 12)
		d.SetReadDeadline(time.Now().Add(time.Second))
		if _, err := io.ReadFull(d, got); err != nil || !bytes.Equal(got, tcp.AppendADU(nil, want, 17, req)) {
			t.Fatalf("the device got % X (%v)", got, err)
		}
		answer := []byte{0x03, 0x06, 0x02, 0x2B, 0x00, 0x00, 0x00, 0x64}
		d.Write(tcp.AppendADU(nil, want-1, 17, []byte{0x83, 0x0B})) // late: another id
		d.Write(tcp.AppendADU(nil, want, 17, answer))
		p.SetReadTimeout(time.Second)
		n, err := p.Read(buf)
		if err != nil || !bytes.Equal(buf[:n], rtu.AppendADU(nil, 17, answer)) {
			t.Fatalf("answer % X (%v)", buf[:n], err)
		}
	}
	d.Write([]byte{0, 1, 0, 9, 0, 2, 1, 3}) // protocol id 9: the stream is lost
	if _, err := p.Read(buf); err == nil {
		t.Fatal("a malformed header is not an error")
	}
}
