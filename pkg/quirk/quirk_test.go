package quirk

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/mcpgw/mcpgw/pkg/pdu"
)

// model answers a read as a device holding register a = a*7+1 and bit
// a = a%3==0 would.
func model(req []byte) []byte {
	fc := req[0]
	addr, qty := int(binary.BigEndian.Uint16(req[1:])), int(binary.BigEndian.Uint16(req[3:]))
	if fc == pdu.ReadCoils || fc == pdu.ReadDiscreteInputs {
		out := []byte{fc, byte((qty + 7) / 8)}
		out = append(out, make([]byte, (qty+7)/8)...)
		for i := range qty {
			if (addr+i)%3 == 0 {
				out[2+i/8] |= 1 << (i % 8)
			}
		}
		return out
	}
	out := []byte{fc, byte(2 * qty)}
	for i := range qty {
		out = binary.BigEndian.AppendUint16(out, uint16((addr+i)*7+1))
	}
	return out
}

func read(fc byte, addr, qty int) []byte {
	return []byte{fc, byte(addr >> 8), byte(addr), byte(qty >> 8), byte(qty)}
}

func TestSplitJoin(t *testing.T) {
	for _, tc := range []struct {
		name  string
		d     Device
		req   []byte
		parts int // 0: not split
	}{
		{"100 holding registers, 10 at a time", Device{MaxRegisters: 10}, read(pdu.ReadHoldingRegisters, 0, 100), 10},
		{"60 input registers, 10 at a time", Device{MaxRegisters: 10}, read(pdu.ReadInputRegisters, 1000, 60), 6},
		{"125 registers, 16 at a time: a short last part", Device{MaxRegisters: 16}, read(pdu.ReadHoldingRegisters, 7, 125), 8},
		{"within the device's most", Device{MaxRegisters: 10}, read(pdu.ReadHoldingRegisters, 0, 10), 0},
		{"bits, 8 at a time", Device{MaxBits: 8}, read(pdu.ReadCoils, 3, 20), 3},
		{"bits, 13 at a time, from an odd address", Device{MaxBits: 13}, read(pdu.ReadDiscreteInputs, 101, 2000), 154},
		{"registers only limited: bits pass", Device{MaxRegisters: 10}, read(pdu.ReadCoils, 0, 100), 0},
		{"no quirk", Device{}, read(pdu.ReadHoldingRegisters, 0, 125), 0},
		{"not a read", Device{MaxRegisters: 1}, []byte{pdu.WriteSingleRegister, 0, 1, 0, 2}, 0},
		{"a malformed read", Device{MaxRegisters: 1}, []byte{pdu.ReadHoldingRegisters, 0, 1, 0}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			parts := tc.d.Split(tc.req)
			if len(parts) != tc.parts {
				t.Fatalf("%d parts, want %d", len(parts), tc.parts)
			}
			if parts == nil {
				return
			}
			answers := make([][]byte, len(parts))
			next := int(binary.BigEndian.Uint16(tc.req[1:]))
			for i, p := range parts {
				if p[0] != tc.req[0] || int(binary.BigEndian.Uint16(p[1:])) != next {
					t.Fatalf("part %d: % X: not where the one before ended (%d)", i, p, next)
				}
				next += int(binary.BigEndian.Uint16(p[3:]))
				answers[i] = model(p)
			}
			got, err := tc.d.Join(tc.req, answers)
			if err != nil {
				t.Fatal(err)
			}
			if want := model(tc.req); !bytes.Equal(got, want) {
				t.Fatalf("joined % X\nwant   % X", got, want)
			}
		})
	}
}

func TestJoinRefusesWhatDoesNotFit(t *testing.T) {
	d := Device{MaxRegisters: 10}
	req := read(pdu.ReadHoldingRegisters, 0, 20)
	parts := d.Split(req)
	good := [][]byte{model(parts[0]), model(parts[1])}
	for name, answers := range map[string][][]byte{
		"a part missing":   good[:1],
		"a part too short": {good[0], model(read(pdu.ReadHoldingRegisters, 10, 9))},
		"another function": {good[0], model(read(pdu.ReadInputRegisters, 10, 10))},
		"an exception":     {good[0], {0x83, 0x02}},
	} {
		if _, err := d.Join(req, answers); err == nil {
			t.Errorf("%s: joined", name)
		}
	}
}

func TestRewriteRestore(t *testing.T) {
	for _, tc := range []struct {
		name        string
		d           Device
		req, device []byte // device: what goes to the device, nil: req as it is
		answer      []byte // the device's normal answer
	}{
		{"FC 6 as FC 16", Device{Registers: AsMultiple}, []byte{6, 0, 10, 0x12, 0x34},
			[]byte{16, 0, 10, 0, 1, 2, 0x12, 0x34}, []byte{16, 0, 10, 0, 1}},
		{"FC 16 of one register as FC 6", Device{Registers: AsSingle}, []byte{16, 0, 10, 0, 1, 2, 0x12, 0x34},
			[]byte{6, 0, 10, 0x12, 0x34}, []byte{6, 0, 10, 0x12, 0x34}},
		{"FC 16 of two registers as it is", Device{Registers: AsSingle}, []byte{16, 0, 10, 0, 2, 4, 0, 1, 0, 2}, nil, nil},
		{"FC 5 on as FC 15", Device{Coils: AsMultiple}, []byte{5, 0, 3, 0xFF, 0},
			[]byte{15, 0, 3, 0, 1, 1, 1}, []byte{15, 0, 3, 0, 1}},
		{"FC 5 off as FC 15", Device{Coils: AsMultiple}, []byte{5, 0, 3, 0, 0},
			[]byte{15, 0, 3, 0, 1, 1, 0}, []byte{15, 0, 3, 0, 1}},
		{"FC 5 of a value the spec forbids: as it is, for the device to refuse", Device{Coils: AsMultiple}, []byte{5, 0, 3, 0x12, 0x34}, nil, nil},
		{"FC 15 of one coil as FC 5", Device{Coils: AsSingle}, []byte{15, 0, 3, 0, 1, 1, 1},
			[]byte{5, 0, 3, 0xFF, 0}, []byte{5, 0, 3, 0xFF, 0}},
		{"a register quirk leaves coils alone", Device{Registers: AsMultiple}, []byte{5, 0, 3, 0xFF, 0}, nil, nil},
		{"a read as it is", Device{Registers: AsMultiple, Coils: AsMultiple}, read(3, 0, 1), nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dev, ok := tc.d.Rewrite(tc.req)
			if tc.device == nil {
				if ok || !bytes.Equal(dev, tc.req) {
					t.Fatalf("rewritten to % X", dev)
				}
				return
			}
			if !ok || !bytes.Equal(dev, tc.device) {
				t.Fatalf("rewritten to % X (%v), want % X", dev, ok, tc.device)
			}
			// What the client would have had from a device that took its
			// request as it is: the echo (FC 5, 6), or address and
			// quantity (FC 15, 16).
			want := tc.req
			if tc.req[0] == 15 || tc.req[0] == 16 {
				want = tc.req[:5]
			}
			if got := Restore(tc.req, tc.answer); !bytes.Equal(got, want) {
				t.Errorf("answer % X restored to % X, want % X", tc.answer, got, want)
			}
			exc := pdu.AppendException(nil, dev[0], pdu.IllegalDataAddress)
			if got := Restore(tc.req, exc); !bytes.Equal(got, pdu.AppendException(nil, tc.req[0], pdu.IllegalDataAddress)) {
				t.Errorf("exception % X restored to % X", exc, got)
			}
		})
	}
}

// FuzzSplitJoin: any read, any device limits: the joined answer of the
// parts is the answer to the whole.
func FuzzSplitJoin(f *testing.F) {
	f.Add(byte(3), uint16(0), uint16(100), uint16(10))
	f.Add(byte(1), uint16(5), uint16(2000), uint16(7))
	f.Fuzz(func(t *testing.T, fc byte, addr, qty, most uint16) {
		fc = fc%4 + 1
		limit := 125
		if fc <= 2 {
			limit = 2000
		}
		q, m := int(qty)%limit+1, int(most)%limit+1
		if int(addr)+q > 65536 {
			return
		}
		d := Device{MaxRegisters: m, MaxBits: m}
		req := read(fc, int(addr), q)
		parts := d.Split(req)
		if q <= m {
			if parts != nil {
				t.Fatalf("% X split within the limit %d", req, m)
			}
			return
		}
		answers := make([][]byte, len(parts))
		for i, p := range parts {
			if n := int(binary.BigEndian.Uint16(p[3:])); n < 1 || n > m {
				t.Fatalf("part % X: outside 1..%d", p, m)
			}
			answers[i] = model(p)
		}
		got, err := d.Join(req, answers)
		if err != nil || !bytes.Equal(got, model(req)) {
			t.Fatalf("% X in parts of %d: % X (%v)", req, m, got, err)
		}
	})
}
