package rtuovertcp

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/mcpgw/mcpgw/internal/specframes"
	"github.com/mcpgw/mcpgw/pkg/rtu"
	"github.com/mcpgw/mcpgw/pkg/tcp"
)

// TestSpecFrames: each of the spec's example requests, as RTU frames
// back to back on one stream, reads as its unit and PDU; a frame with a
// bad CRC between them is dropped and the stream goes on.
func TestSpecFrames(t *testing.T) {
	// Frames back to back in one part; a frame dropped for its CRC is
	// dropped with what came with it, as a device drops a broken frame,
	// and one whose length the spec leaves open (return query data)
	// ends with what came with it: each is sent alone, as a client
	// waiting for its answer would.
	var parts [][]byte
	var cur []byte
	alone := func(frame []byte) {
		if len(cur) > 0 {
			parts = append(parts, cur)
		}
		parts, cur = append(parts, frame), nil
	}
	pairs := specframes.MustLoad()
	bad := rtu.AppendADU(nil, 9, []byte{3, 0, 0, 0, 1})
	bad[len(bad)-1] ^= 0xFF
	for i, p := range pairs {
		frame := rtu.AppendADU(nil, byte(1+i), p.Req)
		if _, err := rtu.RequestLen(frame); errors.Is(err, rtu.ErrUnpredictable) {
			alone(frame)
		} else {
			cur = append(cur, frame...)
		}
		if i == 2 {
			alone(bad)
		}
	}
	alone(nil)
	var f Framing
	buf := make([]byte, tcp.MaxADU)
	var got int
	for k, part := range parts {
		r := bufio.NewReader(bytes.NewReader(part))
		for {
			_, unit, p, err := f.Read(r, buf)
			var fe *tcp.FrameError
			if errors.As(err, &fe) {
				if !bytes.Equal(part, bad) || fe.Close || !errors.Is(err, rtu.ErrBadCRC) {
					t.Fatalf("part %d: %v", k, err)
				}
				continue
			}
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("part %d: %v", k, err)
			}
			want := pairs[got]
			if unit != byte(1+got) || !bytes.Equal(p, want.Req) {
				t.Fatalf("%s: unit %d % X", want.Name, unit, p)
			}
			got++
		}
	}
	if got != len(pairs) {
		t.Fatalf("read %d of %d requests", got, len(pairs))
	}
	// An answer: unit, PDU, CRC.
	frame := append([]byte{0}, 0x03, 0x02, 0x00, 0x2A)
	if out := f.Finish(frame, 0, 17); !bytes.Equal(out, rtu.AppendADU(nil, 17, []byte{0x03, 0x02, 0x00, 0x2A})) {
		t.Fatalf("answer % X", out)
	}
}

// FuzzRead: any bytes read without a panic, and what is read is a frame
// whose CRC checks.
func FuzzRead(f *testing.F) {
	for _, p := range specframes.MustLoad() {
		f.Add(rtu.AppendADU(nil, 1, p.Req))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r := bufio.NewReader(bytes.NewReader(b))
		buf := make([]byte, tcp.MaxADU)
		for range 100 {
			_, unit, p, err := Framing{}.Read(r, buf)
			var fe *tcp.FrameError
			if errors.As(err, &fe) {
				continue
			}
			if err != nil {
				return
			}
			if !bytes.Contains(b, rtu.AppendADU(nil, unit, p)) {
				t.Fatalf("% X read from % X", p, b)
			}
		}
	})
}
