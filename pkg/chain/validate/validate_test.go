package validate_test

import (
	"context"
	"errors"
	"testing"

	"github.com/mcpgw/mcpgw/internal/specframes"
	"github.com/mcpgw/mcpgw/pkg/chain/validate"
	"github.com/mcpgw/mcpgw/pkg/crc"
	"github.com/mcpgw/mcpgw/pkg/pdu"
	"github.com/mcpgw/mcpgw/pkg/request"
	"github.com/mcpgw/mcpgw/pkg/rtu"
)

// Every example request of the spec is one a device can use.
func TestSpecRequestsPass(t *testing.T) {
	for _, p := range specframes.MustLoad() {
		if e := validate.Request(p.Req); e != 0 {
			t.Errorf("%s: % X rejected with %v", p.Name, p.Req, e)
		}
	}
}

func TestRequest(t *testing.T) {
	h := specframes.MustHex
	tests := []struct {
		name string
		pdu  string
		want pdu.Exception
	}{
		{"function code 0", "00 0000 0001", pdu.IllegalFunction},
		{"function code 0x80", "80 0000 0001", pdu.IllegalFunction},
		{"function code 0xFF", "FF", pdu.IllegalFunction},
		{"read 0 registers", "03 0000 0000", pdu.IllegalDataValue},
		{"read 125 registers", "03 0000 007D", 0},
		{"read 126 registers", "03 0000 007E", pdu.IllegalDataValue},
		{"read past address 65535", "03 FFFF 0002", pdu.IllegalDataValue},
		{"read the last register", "03 FFFF 0001", 0},
		{"read with a byte too many", "03 0000 0001 00", pdu.IllegalDataValue},
		{"read with a byte too few", "03 0000 00", pdu.IllegalDataValue},
		{"read 2000 coils", "01 0000 07D0", 0},
		{"read 2001 coils", "01 0000 07D1", pdu.IllegalDataValue},
		{"read 2001 discrete inputs", "02 0000 07D1", pdu.IllegalDataValue},
		{"read 126 input registers", "04 0000 007E", pdu.IllegalDataValue},
		{"write coil 0x1234", "05 0001 1234", pdu.IllegalDataValue},
		{"write coil off", "05 0001 0000", 0},
		{"write single register, short", "06 0001 00", pdu.IllegalDataValue},
		{"write 124 registers", "10 0000 007C F8", pdu.IllegalDataValue},
		{"write 2 registers, byte count 3", "10 0000 0002 03 000A 01", pdu.IllegalDataValue},
		{"write 2 registers, data short", "10 0000 0002 04 000A", pdu.IllegalDataValue},
		{"write 1969 coils", "0F 0000 07B1 F7", pdu.IllegalDataValue},
		{"write 10 coils, byte count 1", "0F 0013 000A 01 CD", pdu.IllegalDataValue},
		{"read/write, write 122", "17 0000 0001 0000 007A F4", pdu.IllegalDataValue},
		{"read exception status with data", "07 00", pdu.IllegalDataValue},
		{"report server id with data", "11 01", pdu.IllegalDataValue},
		{"mask write, short", "16 0004 00F2", pdu.IllegalDataValue},
		{"read FIFO, long", "18 04DE 00", pdu.IllegalDataValue},
		{"read file record, byte count 8", "14 08 06 0004 0001 0002 00", pdu.IllegalDataValue},
		{"device id, code 5", "2B 0E 05 00", pdu.IllegalDataValue},
		{"device id, short", "2B 0E 01", pdu.IllegalDataValue},
		{"another MEI type passes", "2B 0D 01 02 03", 0},
		{"diagnostics, restart communications", "08 0001 FF00", 0},
		{"diagnostics, a byte too many", "08 0001 FF00 00", pdu.IllegalDataValue},
		{"diagnostics, listen only with a frame behind it", "08 0004 0000 0106 0001 0003 980B", pdu.IllegalDataValue},
		{"diagnostics, a byte too few", "08 000A 00", pdu.IllegalDataValue},
		{"diagnostics, no sub-function", "08 00", pdu.IllegalDataValue},
		{"diagnostics, return query data of any length", "08 0000 0102 0304 0506 0708 09", 0},
		{"diagnostics, return query data without data", "08 0000", 0},
		{"user-defined 65 passes", "41 DEAD", 0},
		{"user-defined 100 passes", "64", 0},
		{"unassigned 9 passes", "09 0102", 0},
	}
	for _, tt := range tests {
		if got := validate.Request(h(tt.pdu)); got != tt.want {
			t.Errorf("%s (%s): %v, want %v", tt.name, tt.pdu, got, tt.want)
		}
	}
}

type recorder struct{ got []*request.Request }

func (r *recorder) ServeModbus(_ context.Context, tr *request.Request, dst []byte) []byte {
	r.got = append(r.got, tr)
	return append(dst, tr.PDU[0], 0xAA)
}

func TestHandler(t *testing.T) {
	next := &recorder{}
	h := &validate.Handler{Next: next}
	ctx := context.Background()
	ok := &request.Request{Unit: 1, PDU: specframes.MustHex("03 0000 0001")}
	if out := h.ServeModbus(ctx, ok, nil); string(out) != "\x03\xAA" || len(next.got) != 1 {
		t.Fatalf("a good request: % X, next saw %d", out, len(next.got))
	}
	bad := &request.Request{Unit: 1, PDU: specframes.MustHex("03 0000 0100")}
	if out := h.ServeModbus(ctx, bad, nil); string(out) != "\x83\x03" || bad.Outcome != request.Rejected {
		t.Fatalf("too many registers: % X, outcome %q", out, bad.Outcome)
	}
	fc := &request.Request{Unit: 1, PDU: []byte{0x90, 1}}
	if out := h.ServeModbus(ctx, fc, nil); string(out) != "\x90\x01" {
		t.Fatalf("function code 0x90: % X", out)
	}
	bcast := &request.Request{Unit: 0, PDU: specframes.MustHex("06 0001")}
	if out := h.ServeModbus(ctx, bcast, nil); out != nil {
		t.Fatalf("a broadcast got an answer: % X", out)
	}
	for _, p := range []string{"03 0000 0001", "2B 0E 01 00", "08 0000 A537"} {
		r := &request.Request{Unit: 0, PDU: specframes.MustHex(p)}
		if out := h.ServeModbus(ctx, r, nil); out != nil || r.Outcome != request.Rejected {
			t.Fatalf("a broadcast read %s: % X, %q", p, out, r.Outcome)
		}
	}
	if w := (&request.Request{Unit: 0, PDU: specframes.MustHex("06 0001 0003")}); h.ServeModbus(ctx, w, nil) == nil && w.Outcome == request.Rejected {
		t.Fatal("a broadcast write was dropped")
	}
	if len(next.got) != 2 || h.Rejected() != 6 {
		t.Fatalf("next saw %d requests, %d rejected; want 2 and 6", len(next.got), h.Rejected())
	}
}

// FuzzRequest: no input panics, and whatever passes with a function code
// whose request length the RTU codec predicts has exactly that length,
// so the device gets a frame it can parse.
func FuzzRequest(f *testing.F) {
	for _, p := range specframes.MustLoad() {
		f.Add(p.Req)
	}
	f.Fuzz(func(t *testing.T, p []byte) {
		if len(p) == 0 || len(p) > pdu.MaxSize {
			return
		}
		if validate.Request(p) != 0 {
			return
		}
		adu := crc.Append(append([]byte{1}, p...), 0)
		n, err := rtu.RequestLen(adu)
		if errors.Is(err, rtu.ErrUnpredictable) {
			return // the device ends it at silence
		}
		if err != nil || n != len(adu) {
			t.Fatalf("% X passes, but the RTU codec expects %d bytes (%v), not %d", p, n, err, len(adu))
		}
	})
}
