package tcp

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/mcpgw/mcpgw/internal/specframes"
	"github.com/mcpgw/mcpgw/pkg/request"
)

func TestHeaderGolden(t *testing.T) {
	// Modbus Messaging on TCP/IP: read 3 holding registers from 0x6B, unit 0x11.
	adu := specframes.MustHex("0001 0000 0006 11 03 006B 0003")
	h, err := ParseHeader(adu)
	if err != nil || h != (Header{TID: 1, Length: 6, Unit: 0x11}) || h.PDULen() != 5 {
		t.Fatalf("ParseHeader = %+v, %v", h, err)
	}
	if got := AppendADU(nil, 1, 0x11, adu[7:]); !bytes.Equal(got, adu) {
		t.Fatalf("AppendADU = % X", got)
	}
	bad := []struct {
		hex  string
		want error
	}{
		{"0001 0001 0006 11", ErrProtocol},
		{"0001 0000 0001 11", ErrLength},
		{"0001 0000 00FF 11", ErrLength},
		{"0001 0000 00", ErrShort},
	}
	for _, tt := range bad {
		if _, err := ParseHeader(specframes.MustHex(tt.hex)); !errors.Is(err, tt.want) {
			t.Errorf("%s: %v, want %v", tt.hex, err, tt.want)
		}
	}
}

func FuzzMBAP(f *testing.F) {
	f.Add(specframes.MustHex("0001 0000 0006 11 03 006B 0003"))
	f.Add(specframes.MustHex("FFFF 0000 00FE 00"))
	for i, p := range specframes.MustLoad() {
		f.Add(AppendADU(nil, uint16(i), 0x11, p.Req))
		f.Add(AppendADU(nil, uint16(i), 0x11, p.Resp))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := ParseHeader(b)
		if err != nil {
			return
		}
		if h.PDULen() < 1 || h.PDULen() > 253 {
			t.Fatalf("accepted PDU length %d", h.PDULen())
		}
		if len(b) >= HeaderLen+h.PDULen() {
			re := AppendADU(nil, h.TID, h.Unit, b[HeaderLen:HeaderLen+h.PDULen()])
			if !bytes.Equal(re, b[:len(re)]) {
				t.Fatalf("re-encode % X != % X", re, b[:len(re)])
			}
		}
	})
}

// echo answers with the request PDU, after an optional pause.
type echo struct{ delay time.Duration }

func (e echo) ServeModbus(ctx context.Context, r *request.Request, dst []byte) []byte {
	time.Sleep(e.delay)
	switch r.Unit {
	case 0:
		return nil
	case 0xEE:
		panic("test panic")
	}
	return append(dst, r.PDU...)
}

func start(t *testing.T, s *Server) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(l)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		s.Shutdown(ctx)
	})
	return l.Addr().String()
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(5 * time.Second))
	return c
}

func readADU(t *testing.T, c net.Conn) []byte {
	t.Helper()
	hdr := make([]byte, HeaderLen)
	if _, err := io.ReadFull(c, hdr); err != nil {
		t.Fatalf("read header: %v", err)
	}
	h, err := ParseHeader(hdr)
	if err != nil {
		t.Fatal(err)
	}
	body := make([]byte, h.PDULen())
	if _, err := io.ReadFull(c, body); err != nil {
		t.Fatal(err)
	}
	return append(hdr, body...)
}

func TestPipelinedAnsweredInOrder(t *testing.T) {
	addr := start(t, &Server{Handler: echo{}})
	c := dial(t, addr)
	var all []byte
	for i := range 16 {
		all = AppendADU(all, uint16(1000+i), 1, []byte{0x03, 0, byte(i), 0, 1})
	}
	if _, err := c.Write(all); err != nil {
		t.Fatal(err)
	}
	for i := range 16 {
		got := readADU(t, c)
		if want := AppendADU(nil, uint16(1000+i), 1, []byte{0x03, 0, byte(i), 0, 1}); !bytes.Equal(got, want) {
			t.Fatalf("answer %d: % X, want % X", i, got, want)
		}
	}
}

func TestSplitFrames(t *testing.T) {
	addr := start(t, &Server{Handler: echo{}})
	c := dial(t, addr)
	req := AppendADU(nil, 7, 1, []byte{0x03, 0, 0, 0, 10})
	for _, b := range req {
		c.Write([]byte{b})
		time.Sleep(time.Millisecond)
	}
	if got := readADU(t, c); !bytes.Equal(got, req) {
		t.Fatalf("% X", got)
	}
}

func TestMalformedClosesOnlyThatConnection(t *testing.T) {
	addr := start(t, &Server{Handler: echo{}})
	good := dial(t, addr)
	for _, bad := range []string{"0001 0001 0006 01 03 0000 0001", "0001 0000 0000 01", "0001 0000 0100 01"} {
		c := dial(t, addr)
		c.Write(specframes.MustHex(bad))
		if n, err := c.Read(make([]byte, 10)); err == nil {
			t.Fatalf("%s: connection still open, read %d bytes", bad, n)
		}
	}
	req := AppendADU(nil, 9, 1, []byte{0x03, 0, 0, 0, 1})
	good.Write(req)
	if got := readADU(t, good); !bytes.Equal(got, req) {
		t.Fatalf("good client after bad ones: % X", got)
	}
}

func TestBroadcastGetsNoAnswer(t *testing.T) {
	addr := start(t, &Server{Handler: echo{}})
	c := dial(t, addr)
	c.Write(AppendADU(nil, 1, 0, []byte{0x06, 0, 1, 0, 1}))
	req := AppendADU(nil, 2, 1, []byte{0x03, 0, 0, 0, 1})
	c.Write(req)
	if got := readADU(t, c); !bytes.Equal(got, req) {
		t.Fatalf("first answer after a broadcast: % X, want the unicast's", got)
	}
}

func TestPanicIsRecovered(t *testing.T) {
	addr := start(t, &Server{Handler: echo{}})
	c := dial(t, addr)
	c.Write(AppendADU(nil, 1, 0xEE, []byte{0x03}))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("panicking connection not closed")
	}
	c2 := dial(t, addr)
	req := AppendADU(nil, 2, 1, []byte{0x03, 0, 0, 0, 1})
	c2.Write(req)
	if got := readADU(t, c2); !bytes.Equal(got, req) {
		t.Fatal("server did not survive a handler panic")
	}
}

func TestConnectionCapAndIdle(t *testing.T) {
	s := &Server{Handler: echo{}, MaxConns: 3, IdleTimeout: 200 * time.Millisecond}
	addr := start(t, s)
	for range 3 {
		dial(t, addr)
	}
	for s.NumConns() < 3 {
		time.Sleep(time.Millisecond)
	}
	extra := dial(t, addr)
	if _, err := extra.Read(make([]byte, 1)); err == nil {
		t.Fatal("connection over max_conns was served")
	}
	deadline := time.Now().Add(3 * time.Second)
	for s.NumConns() > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := s.NumConns(); n != 0 {
		t.Fatalf("%d idle connections still open after the idle timeout", n)
	}
}

func TestShutdownFinishesInFlight(t *testing.T) {
	s := &Server{Handler: echo{delay: 200 * time.Millisecond}}
	addr := start(t, s)
	c := dial(t, addr)
	idle := dial(t, addr)
	req := AppendADU(nil, 5, 1, []byte{0x03, 0, 0, 0, 1})
	c.Write(req)
	time.Sleep(50 * time.Millisecond)
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := s.Shutdown(context.Background()); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	if got := readADU(t, c); !bytes.Equal(got, req) {
		t.Fatalf("in-flight answer lost in shutdown: % X", got)
	}
	wg.Wait()
	if _, err := idle.Read(make([]byte, 1)); err == nil {
		t.Fatal("idle connection survived shutdown")
	}
	if _, err := net.Dial("tcp", addr); err == nil {
		t.Fatal("still accepting after shutdown")
	}
}

func BenchmarkParseHeader(b *testing.B) {
	adu := binary.BigEndian.AppendUint16(nil, 1)
	adu = append(adu, 0, 0, 0, 6, 1, 3, 0, 0, 0, 10)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseHeader(adu); err != nil {
			b.Fatal(err)
		}
	}
}

// TestRefusalsArePaced: exceptions to requests that reached no device
// (Attempts 0) go out at most one per RefusalPace on a connection; a
// device's own exceptions and normal answers are not held back.
func TestRefusalsArePaced(t *testing.T) {
	h := request.HandlerFunc(func(_ context.Context, r *request.Request, dst []byte) []byte {
		if r.Unit == 2 {
			r.Attempts = 1 // the device's own exception
		}
		if r.Unit == 3 { // a device's answer
			r.Attempts = 1
			return append(dst, r.PDU[0], 2, 0, 7)
		}
		return append(dst, r.PDU[0]|0x80, 0x0B)
	})
	// A pace long enough that a shared machine's scheduling does not
	// blur paced (540 ms for ten) and unpaced (a few ms).
	addr := start(t, &Server{Handler: h, RefusalPace: 60 * time.Millisecond})
	send := func(c net.Conn, units ...byte) time.Duration {
		var all []byte
		for i, u := range units {
			all = AppendADU(all, uint16(i), u, []byte{0x03, 0, 0, 0, 1})
		}
		start := time.Now()
		c.Write(all)
		for range units {
			readADU(t, c)
		}
		return time.Since(start)
	}
	repeat := func(u byte, n int) []byte {
		us := make([]byte, n)
		for i := range us {
			us[i] = u
		}
		return us
	}
	// A new connection's refusals are spaced at once; one that has had
	// answers has a burst's credit.
	c := dial(t, addr)
	if took := send(c, repeat(1, 10)...); took < 9*60*time.Millisecond {
		t.Errorf("10 refusals on a new connection: %v, want them spaced", took)
	}
	send(c, repeat(3, RefusalBurst)...)
	if took := send(c, repeat(1, RefusalBurst)...); took > 270*time.Millisecond {
		t.Errorf("%d refusals after as many answers: %v", RefusalBurst, took)
	}
	if took := send(c, repeat(1, 10)...); took < 9*60*time.Millisecond {
		t.Errorf("10 refusals past the burst: %v, want them spaced", took)
	}
	// A device's own exceptions are never held back.
	if took := send(dial(t, addr), repeat(2, 2*RefusalBurst)...); took > 270*time.Millisecond {
		t.Errorf("%d of a device's exceptions: %v", 2*RefusalBurst, took)
	}
	// Refusals among answers (a scan that meets a few offline units
	// among live ones) are not held back either: each answer gives one
	// back.
	var scan []byte
	for range 5 * RefusalBurst {
		scan = append(scan, 3, 3, 1)
	}
	if took := send(dial(t, addr), scan...); took > 270*time.Millisecond {
		t.Errorf("a scan, one refusal in three: %v", took)
	}
}
