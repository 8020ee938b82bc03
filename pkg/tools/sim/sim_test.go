package sim_test

import (
	"bytes"
	"encoding/binary"
	"testing"
	"time"

	"github.com/mcpgw/mcpgw/pkg/crc"
	"github.com/mcpgw/mcpgw/pkg/pdu"
	"github.com/mcpgw/mcpgw/pkg/registers"
	"github.com/mcpgw/mcpgw/pkg/rtu"
	"github.com/mcpgw/mcpgw/pkg/tools/sim"
	"github.com/mcpgw/mcpgw/pkg/wire/serialport"
)

// serve runs l on a pty and returns the master's end.
func serve(t *testing.T, l *sim.Line) serialport.Port {
	t.Helper()
	p, err := serialport.NewPty()
	if err != nil {
		t.Fatal(err)
	}
	master, err := serialport.Open(p.Path, serialport.Settings{Baud: 19200, DataBits: 8, Parity: 'N', StopBits: 1})
	if err != nil {
		t.Fatal(err)
	}
	l.Port = p.Device
	stop := l.Start()
	t.Cleanup(func() { stop(); master.Close(); p.Close() })
	return master
}

// send writes b and returns what comes back until the line is quiet for
// 60 ms (nil for silence).
func send(t *testing.T, port serialport.Port, b []byte) []byte {
	t.Helper()
	if _, err := port.Write(b); err != nil {
		t.Fatal(err)
	}
	var got []byte
	rx := make([]byte, 512)
	for {
		port.SetReadTimeout(60 * time.Millisecond)
		n, err := port.Read(rx)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			return got
		}
		got = append(got, rx[:n]...)
	}
}

func readReq(unit byte, addr, qty uint16) []byte {
	p := []byte{pdu.ReadHoldingRegisters}
	p = binary.BigEndian.AppendUint16(binary.BigEndian.AppendUint16(p, addr), qty)
	return rtu.AppendADU(nil, unit, p)
}

func readAnswer(unit byte, addr, qty int) []byte {
	p := []byte{pdu.ReadHoldingRegisters, byte(2 * qty)}
	for i := range qty {
		p = binary.BigEndian.AppendUint16(p, registers.PatternHolding(unit, addr+i))
	}
	return rtu.AppendADU(nil, unit, p)
}

func TestAnswers(t *testing.T) {
	l := &sim.Line{Units: sim.NewUnits([]byte{1, 2}, 100)}
	port := serve(t, l)
	tests := []struct {
		name string
		req  []byte
		want []byte
	}{
		{"read", readReq(2, 10, 3), readAnswer(2, 10, 3)},
		{"the device's exception", readReq(1, 99, 2), rtu.AppendADU(nil, 1, []byte{0x83, byte(pdu.IllegalDataAddress)})},
		{"another unit's request: silence", readReq(7, 0, 1), nil},
		{"bad CRC: silence", append(readReq(1, 0, 1)[:6], 0, 0), nil},
		{"garbage, then a request: the request is answered", append([]byte{0xFF, 0x00, 0x13}, readReq(1, 5, 1)...), readAnswer(1, 5, 1)},
	}
	for _, tt := range tests {
		if got := send(t, port, tt.req); !bytes.Equal(got, tt.want) {
			t.Errorf("%s: got % X, want % X", tt.name, got, tt.want)
		}
	}
	if s := l.Stats(); s.Requests != 3 || s.Answers != 3 || s.BadFrames == 0 {
		t.Errorf("stats %+v: want 3 requests and answers, and bad frames counted", s)
	}
}

func TestBroadcastWritesEveryUnitSilently(t *testing.T) {
	l := &sim.Line{Units: sim.NewUnits([]byte{1, 2}, 100)}
	port := serve(t, l)
	if got := send(t, port, rtu.AppendADU(nil, 0, []byte{pdu.WriteSingleRegister, 0, 7, 0xBE, 0xEF})); got != nil {
		t.Fatalf("a broadcast was answered: % X", got)
	}
	for _, u := range []byte{1, 2} {
		want := rtu.AppendADU(nil, u, []byte{pdu.ReadHoldingRegisters, 2, 0xBE, 0xEF})
		if got := send(t, port, readReq(u, 7, 1)); !bytes.Equal(got, want) {
			t.Errorf("unit %d after the broadcast: % X, want % X", u, got, want)
		}
	}
	if s := l.Stats(); s.Broadcasts != 1 {
		t.Errorf("stats %+v", s)
	}
}

func TestFaults(t *testing.T) {
	req, good := readReq(1, 3, 2), readAnswer(1, 3, 2)
	tests := []struct {
		name   string
		faults sim.Faults
		check  func(got []byte) bool
		stat   func(sim.Stats) bool
	}{
		{"drop", sim.Faults{Drop: 1}, func(got []byte) bool { return got == nil },
			func(s sim.Stats) bool { return s.Dropped == 1 && s.Answers == 0 }},
		{"corrupt", sim.Faults{Corrupt: 1}, func(got []byte) bool {
			return len(got) == len(good) && !bytes.Equal(got, good) && !crc.Valid(got)
		}, func(s sim.Stats) bool { return s.Corrupted == 1 }},
		{"corrupt the CRC only", sim.Faults{Corrupt: 1, CRCOnly: true}, func(got []byte) bool {
			n := len(good) - crc.Size
			return len(got) == len(good) && bytes.Equal(got[:n], good[:n]) && !crc.Valid(got)
		}, func(s sim.Stats) bool { return s.Corrupted == 1 }},
		{"echo", sim.Faults{Echo: true}, func(got []byte) bool { return bytes.Equal(got, append(append([]byte{}, req...), good...)) },
			func(s sim.Stats) bool { return s.Answers == 1 }},
		{"noise", sim.Faults{Noise: 1}, func(got []byte) bool {
			extra := len(got) - len(good)
			return extra >= 1 && extra <= 4 && bytes.Equal(got[extra:], good)
		}, func(s sim.Stats) bool { return s.Answers == 1 }},
		{"late", sim.Faults{Late: 1, LateBy: 20 * time.Millisecond}, func(got []byte) bool { return bytes.Equal(got, good) },
			func(s sim.Stats) bool { return s.LateAnswers == 1 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.faults.Seed = 1
			l := &sim.Line{Units: sim.NewUnits([]byte{1}, 100), Faults: tt.faults}
			port := serve(t, l)
			if got := send(t, port, req); !tt.check(got) {
				t.Errorf("got % X (a right answer is % X)", got, good)
			}
			if s := l.Stats(); !tt.stat(s) {
				t.Errorf("stats %+v", s)
			}
		})
	}
}

func TestReplay(t *testing.T) {
	req := readReq(4, 0, 1)
	first := rtu.AppendADU(nil, 4, []byte{pdu.ReadHoldingRegisters, 2, 0x12, 0x34})
	l := &sim.Line{Replay: map[string][][]byte{string(req[:len(req)-2]): {first, nil}}}
	port := serve(t, l)
	for i, want := range [][]byte{first, nil, nil} {
		if got := send(t, port, req); !bytes.Equal(got, want) {
			t.Errorf("request %d: got % X, want % X", i+1, got, want)
		}
	}
	if got := send(t, port, readReq(4, 1, 1)); got != nil {
		t.Errorf("a request the capture never saw was answered: % X", got)
	}
	if s := l.Stats(); s.Answers != 1 || s.Dropped != 2 || s.Requests != 4 {
		t.Errorf("stats %+v", s)
	}
}
