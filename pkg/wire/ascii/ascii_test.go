package ascii

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/mcpgw/mcpgw/internal/specframes"
	"github.com/mcpgw/mcpgw/pkg/crc"
	"github.com/mcpgw/mcpgw/pkg/rtu"
)

func TestGolden(t *testing.T) {
	// Read one holding register at 0 of unit 1: 01 03 00 00 00 01, LRC FB.
	if got := string(Append(nil, 1, []byte{3, 0, 0, 0, 1})); got != ":010300000001FB\r\n" {
		t.Fatalf("frame %q", got)
	}
	for _, p := range specframes.MustLoad() {
		for _, pdu := range [][]byte{p.Req, p.Resp} {
			got, err := Parse(nil, Append(nil, 17, pdu))
			if err != nil || got[0] != 17 || !bytes.Equal(got[1:], pdu) {
				t.Fatalf("%s: % X, %v", p.Name, got, err)
			}
		}
	}
	for _, bad := range []struct {
		frame string
		err   error
	}{
		{":010300000001FA\r\n", ErrLRC},
		{":010300000001F\r\n", ErrFrame},
		{":0103000000XYFB\r\n", ErrFrame},
		{"010300000001FB\r\n", ErrFrame},
		{":010300000001FB\n", ErrFrame},
	} {
		if _, err := Parse(nil, []byte(bad.frame)); !errors.Is(err, bad.err) {
			t.Errorf("%q: %v, want %v", bad.frame, err, bad.err)
		}
	}
}

// wire is a serial port in memory: what is written, and what the test
// puts on the line to read, a little at a time.
type wire struct {
	written []byte
	toRead  [][]byte
}

func (w *wire) Write(b []byte) (int, error) { w.written = append(w.written, b...); return len(b), nil }
func (w *wire) Read(b []byte) (int, error) {
	if len(w.toRead) == 0 {
		return 0, nil
	}
	n := copy(b, w.toRead[0])
	w.toRead[0] = w.toRead[0][n:]
	if len(w.toRead[0]) == 0 {
		w.toRead = w.toRead[1:]
	}
	return n, nil
}
func (w *wire) SetReadTimeout(time.Duration) error { return nil }
func (w *wire) ResetInputBuffer() error            { w.toRead = nil; return nil }
func (w *wire) Close() error                       { return nil }

// TestPort: the line's RTU frames go out as ASCII; answers arriving in
// pieces, after noise, come back as RTU frames; a bad LRC comes back
// with a bad CRC, for the line to recover from.
func TestPort(t *testing.T) {
	w := &wire{}
	p := New(w)
	if _, err := p.Write(rtu.AppendADU(nil, 1, []byte{3, 0, 0, 0, 1})); err != nil || string(w.written) != ":010300000001FB\r\n" {
		t.Fatalf("written %q (%v)", w.written, err)
	}
	answer := Append(nil, 1, []byte{3, 2, 0x12, 0x34})
	w.toRead = [][]byte{[]byte("\x00noise"), answer[:5], answer[5:]}
	buf := make([]byte, 300)
	var got []byte
	for range 10 {
		n, err := p.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, buf[:n]...)
	}
	if !bytes.Equal(got, rtu.AppendADU(nil, 1, []byte{3, 2, 0x12, 0x34})) {
		t.Fatalf("read % X", got)
	}
	bad := []byte(":010302123400\r\n") // LRC should be B4
	w.toRead = [][]byte{bad}
	n, _ := p.Read(buf)
	if n != 7 || crc.Valid(buf[:n]) || !bytes.Equal(buf[:5], []byte{1, 3, 2, 0x12, 0x34}) {
		t.Fatalf("a bad LRC read as % X", buf[:n])
	}
}

// FuzzParse: any bytes parse without a panic, and what parses encodes
// back to the same frame (upper or lower case hex).
func FuzzParse(f *testing.F) {
	for _, p := range specframes.MustLoad() {
		f.Add(Append(nil, 1, p.Req))
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		adu, err := Parse(nil, frame)
		if err != nil {
			return
		}
		if again := Append(nil, adu[0], adu[1:]); !bytes.EqualFold(again, frame) {
			t.Fatalf("%q parsed as % X, which is %q", frame, adu, again)
		}
	})
}
