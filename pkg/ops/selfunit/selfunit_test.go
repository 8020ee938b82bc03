package selfunit

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/mcpgw/mcpgw/internal/specframes"
	"github.com/mcpgw/mcpgw/pkg/pdu"
	"github.com/mcpgw/mcpgw/pkg/request"
)

func testHandler(unit byte) *Handler {
	return New(unit, Sources{
		Version: "1.2.3",
		Started: time.Now().Add(-70000 * time.Second),
		Lines: func() []Line {
			return []Line{
				{Up: true, Transactions: 0x12345, Failures: 2, CRCErrors: 3, Queued: 4},
				{Why: Permission, Transactions: 1 << 32},
			}
		},
		Online: func(u byte) bool { return u == 1 || u == 9 },
	})
}

func TestAnswer(t *testing.T) {
	h := testHandler(255)
	for _, tc := range []struct{ name, req, want string }{
		// 70000 s = 0x00011170; "1.2.3" in ASCII, NUL-padded.
		{"uptime and version", "04 0000 0006", "04 0C 0001 1170 312E 322E 3300 0000"},
		{"FC 3 mirrors FC 4", "03 000A 0001", "03 02 0002"},
		{"line 0", "04 0014 0009", "04 12 0001 0000 0001 2345 0000 0002 0000 0003 0004"},
		{"line 1 down, counter wraps", "04 001E 0004", "04 08 0000 0003 0000 0000"},
		{"beyond the last line", "04 001E 000B", "84 02"},
		{"between the header and the lines", "04 000B 0001", "04 02 0000"},
		{"units 0-15 online", "02 0000 0010", "02 02 02 02"},
		{"FC 1 mirrors FC 2", "01 0009 0001", "01 01 01"},
		{"beyond unit 247", "02 00F0 0009", "82 02"},
		{"quantity 0", "04 0000 0000", "84 02"},
		{"a write", "06 0000 0001", "86 01"},
		{"a multiple write", "10 0000 0001 02 0001", "90 01"},
		{"diagnostics", "08 0000 ABCD", "88 01"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := h.answer(specframes.MustHex(tc.req), nil)
			if want := specframes.MustHex(tc.want); !bytes.Equal(got, want) {
				t.Fatalf("% X: got % X, want % X", specframes.MustHex(tc.req), got, want)
			}
		})
	}
}

func TestMiddleware(t *testing.T) {
	passed := 0
	next := request.HandlerFunc(func(_ context.Context, _ *request.Request, dst []byte) []byte {
		passed++
		return append(dst, 0x03, 0x02, 0xAB, 0xCD)
	})
	h := testHandler(0)
	m := h.Middleware(next)
	ask := func(unit byte) []byte {
		return m.ServeModbus(context.Background(), &request.Request{Unit: unit, PDU: specframes.MustHex("03 000A 0001")}, nil)
	}
	if got := ask(255); passed != 1 || got[2] != 0xAB {
		t.Fatalf("self_unit 0 answered unit 255 itself: % X", got)
	}
	h.SetUnit(255)
	if got := ask(255); passed != 1 || !bytes.Equal(got, specframes.MustHex("03 02 0002")) {
		t.Fatalf("unit 255: % X (passed %d)", got, passed)
	}
	if ask(1); passed != 2 {
		t.Fatal("unit 1 did not reach the line")
	}
}

func FuzzAnswer(f *testing.F) {
	for _, s := range []string{"04 0000 0006", "02 0000 07D0", "03 0014 007D", "06 0000 0001"} {
		f.Add(specframes.MustHex(s))
	}
	h := testHandler(255)
	f.Fuzz(func(t *testing.T, req []byte) {
		if len(req) == 0 {
			return
		}
		resp := h.answer(req, nil)
		if len(resp) < 2 || len(resp) > pdu.MaxSize || !pdu.Answers(req[0], resp[0]) {
			t.Fatalf("% X answered % X", req, resp)
		}
	})
}
