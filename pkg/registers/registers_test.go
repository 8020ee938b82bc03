package registers

import (
	"bytes"
	"encoding/hex"
	"testing"

	"github.com/mcpgw/mcpgw/internal/specframes"
	"github.com/mcpgw/mcpgw/pkg/pdu"
)

// specModel holds the values behind the Application Protocol's examples.
func specModel(t *testing.T) *Model {
	m := New(200)
	// 6.1: coils 20..38 read as CD 6B 05.
	for i, b := range specframes.MustHex("CD 6B 05") {
		for j := range 8 {
			if k := 19 + i*8 + j; k < 19+19 {
				m.Coils[k] = b&(1<<j) != 0
			}
		}
	}
	// 6.2: discrete inputs 197..218 are not used here.
	// 6.3: holding registers 108..110 = 555, 0, 100.
	copy(m.Holding[107:], []uint16{0x022B, 0x0000, 0x0064})
	// 6.4: input register 9 = 10.
	m.Input[8] = 0x000A
	// 6.16: register 4 holds 0x12 before the mask write.
	m.Holding[4] = 0x12
	return m
}

func TestHandleSpecExamples(t *testing.T) {
	tests := []struct{ name, req, resp string }{
		{"01 read coils 20-38", "01 0013 0013", "01 03 CD 6B 05"},
		{"03 read holding 108-110", "03 006B 0003", "03 06 022B 0000 0064"},
		{"04 read input 9", "04 0008 0001", "04 02 000A"},
		{"05 write coil 173 on", "05 00AC FF00", "05 00AC FF00"},
		{"06 write register 2", "06 0001 0003", "06 0001 0003"},
		{"0F write 10 coils from 20", "0F 0013 000A 02 CD 01", "0F 0013 000A"},
		{"10 write 2 registers from 2", "10 0001 0002 04 000A 0102", "10 0001 0002"},
		{"16 mask write", "16 0004 00F2 0025", "16 0004 00F2 0025"},
		{"03 read back mask result", "03 0004 0001", "03 02 0017"},
		{"03 read back FC 10 write", "03 0001 0002", "03 04 000A 0102"},
		{"01 read back FC 0F write", "01 0013 000A", "01 02 CD 01"},
		{"exception 02: past the table", "03 00C7 0002", "83 02"},
		{"exception 03: quantity 0", "03 0000 0000", "83 03"},
		{"exception 03: quantity 126", "03 0000 007E", "83 03"},
		{"exception 03: coil value", "05 0000 1234", "85 03"},
		{"exception 03: byte count mismatch", "10 0001 0002 03 000A 01", "90 03"},
		{"exception 01: unknown function", "41 0000", "C1 01"},
		{"exception 01: MEI other than 0E", "2B 0D 00", "AB 01"},
		{"exception 03: read coils truncated", "01 0000", "81 03"},
		{"exception 02: write single register past the table", "06 00C8 0001", "86 02"},
		{"08 return query data", "08 0000 A537", "08 0000 A537"},
		{"08 return query data, longer", "08 0000 0102 0304 0506 0708", "08 0000 0102 0304 0506 0708"},
		{"exception 01: force listen only", "08 0004 0000", "88 01"},
	}
	m := specModel(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := m.Handle(specframes.MustHex(tt.req), nil)
			if want := specframes.MustHex(tt.resp); !bytes.Equal(got, want) {
				t.Fatalf("Handle(%s) = % X, want % X", tt.req, got, want)
			}
		})
	}
}

func TestReadWriteMultipleWritesFirst(t *testing.T) {
	// 6.17: write 3 registers at 15 with 00FF, read 6 from 4: overlapping
	// ranges show the write happened first.
	m := New(100)
	for i := range m.Holding {
		m.Holding[i] = uint16(i)
	}
	got := m.Handle(specframes.MustHex("17 0003 0006 000E 0003 06 00FF 00FF 00FF"), nil)
	want := specframes.MustHex("17 0C 0003 0004 0005 0006 0007 0008")
	if !bytes.Equal(got, want) {
		t.Fatalf("got % X, want % X", got, want)
	}
	got = m.Handle(specframes.MustHex("17 000D 0003 000E 0002 04 1111 2222"), nil)
	want = specframes.MustHex("17 06 000D 1111 2222")
	if !bytes.Equal(got, want) {
		t.Fatalf("overlap: got % X, want % X", got, want)
	}
}

func TestRefusedWriteChangesNothing(t *testing.T) {
	m := New(10)
	m.Handle(specframes.MustHex("10 0008 0003 06 0001 0002 0003"), nil) // 8..10: past the end
	for i, v := range m.Holding {
		if v != 0 {
			t.Fatalf("register %d changed to %d by a refused write", i, v)
		}
	}
}

func TestMaxQuantities(t *testing.T) {
	m := New(65536)
	m.Pattern(7)
	if got := m.Handle(specframes.MustHex("01 0000 07D0"), nil); len(got) != 2+250 || got[1] != 250 {
		t.Fatalf("2000 coils: %d bytes", len(got))
	}
	got := m.Handle(specframes.MustHex("03 FF83 007D"), nil) // 125 registers ending at 65535
	if len(got) != 2+250 || u16(got[2:]) != int(PatternHolding(7, 0xFF83)) {
		t.Fatalf("125 registers at the top: % X", got[:4])
	}
	if got := m.Handle(specframes.MustHex("03 FF84 007D"), nil); !bytes.Equal(got, specframes.MustHex("83 02")) {
		t.Fatalf("past 65535: % X", got)
	}
	w := append(specframes.MustHex("0F 0000 07B0 F6"), bytes.Repeat([]byte{0xAA}, 246)...)
	if got := m.Handle(w, nil); !bytes.Equal(got, specframes.MustHex("0F 0000 07B0")) {
		t.Fatalf("1968 coils: % X", got)
	}
	w = append(specframes.MustHex("10 0000 007B F6"), bytes.Repeat([]byte{0xAB}, 246)...)
	if got := m.Handle(w, nil); !bytes.Equal(got, specframes.MustHex("10 0000 007B")) {
		t.Fatalf("123 registers: % X", got)
	}
}

func TestDeviceIdentification(t *testing.T) {
	m := New(1)
	m.ID = Identity{VendorName: "Company identification", ProductCode: "Product code XX", Revision: "V2.11",
		VendorURL: "u", ProductName: "p", ModelName: "m", AppName: "a"}
	// 6.21's example answer, with our conformity level 0x82.
	want := "2B 0E 01 82 00 00 03 00 16" + hex.EncodeToString([]byte("Company identification")) +
		"01 0F" + hex.EncodeToString([]byte("Product code XX")) + "02 05" + hex.EncodeToString([]byte("V2.11"))
	if got := m.Handle(specframes.MustHex("2B 0E 01 00"), nil); !bytes.Equal(got, specframes.MustHex(want)) {
		t.Fatalf("basic: % X", got)
	}
	if got := m.Handle(specframes.MustHex("2B 0E 04 05"), nil); !bytes.Equal(got, specframes.MustHex("2B 0E 04 82 00 00 01 05 01 6D")) {
		t.Fatalf("individual: % X", got)
	}
	if got := m.Handle(specframes.MustHex("2B 0E 02 09"), nil); got[6] != 7 || got[7] != 0 {
		t.Fatalf("regular from an unknown id must restart at 0: % X", got)
	}
	if got := m.Handle(specframes.MustHex("2B 0E 04 09"), nil); !bytes.Equal(got, specframes.MustHex("AB 02")) {
		t.Fatalf("unknown individual object: % X", got)
	}
	if got := m.Handle(specframes.MustHex("2B 0E 05 00"), nil); !bytes.Equal(got, specframes.MustHex("AB 03")) {
		t.Fatalf("bad code: % X", got)
	}
}

func TestReportServerID(t *testing.T) {
	m := New(1)
	m.ID.ProductName, m.ID.ServerID = "dev", 0x2A
	if got := m.Handle([]byte{0x11}, nil); !bytes.Equal(got, specframes.MustHex("11 05 2A FF 646576")) {
		t.Fatalf("got % X", got)
	}
}

func FuzzHandle(f *testing.F) {
	for _, s := range []string{"01 0013 0013", "03 006B 0003", "0F 0013 000A 02 CD 01",
		"10 0001 0002 04 000A 0102", "16 0004 00F2 0025", "17 0003 0006 000E 0003 06 00FF 00FF 00FF",
		"2B 0E 01 00", "11", "05 00AC FF00"} {
		f.Add(specframes.MustHex(s))
	}
	for _, p := range specframes.MustLoad() {
		f.Add(p.Req)
	}
	// A return-query-data echo one byte longer than a PDU may be.
	f.Add(append([]byte{0x08, 0, 0}, bytes.Repeat([]byte{0xBC}, pdu.MaxSize-2)...))
	m := New(300)
	f.Fuzz(func(t *testing.T, req []byte) {
		resp := m.Handle(req, nil)
		if len(resp) < 2 || len(resp) > pdu.MaxSize {
			t.Fatalf("response of %d bytes to % X", len(resp), req)
		}
		if len(req) > 0 && !pdu.Answers(req[0], resp[0]) {
			t.Fatalf("response fc %#x to request fc %#x", resp[0], req[0])
		}
	})
}

func BenchmarkHandleRead125(b *testing.B) {
	m := New(1000)
	req := []byte{0x03, 0, 0, 0, 125}
	dst := make([]byte, 0, 256)
	b.ReportAllocs()
	for b.Loop() {
		dst = m.Handle(req, dst[:0])
	}
}
