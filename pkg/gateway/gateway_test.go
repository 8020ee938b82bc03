package gateway_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/goburrow/modbus"
	"github.com/mcpgw/mcpgw/pkg/config"
	"github.com/mcpgw/mcpgw/pkg/gateway"
	"github.com/mcpgw/mcpgw/pkg/pdu"
	"github.com/mcpgw/mcpgw/pkg/registers"
	"github.com/mcpgw/mcpgw/pkg/tcp"
	"github.com/mcpgw/mcpgw/pkg/tools/sim"
	"github.com/mcpgw/mcpgw/pkg/wire/serialport"
)

// syncBuffer collects log output from many goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type rig struct {
	addr string
	path string // the line's port
	dev  *sim.Line
	svc  *gateway.Service
	log  *syncBuffer
}

// startService runs a gateway from config text, stops it when the test
// ends, and returns it with its address once its first line is up.
func startService(t *testing.T, cfgText string, log *slog.Logger) (*gateway.Service, string) {
	t.Helper()
	cfg, err := config.Parse(cfgText)
	if err != nil {
		t.Fatal(err)
	}
	svc, err := gateway.NewService(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	addr, err := svc.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		svc.Shutdown(ctx)
	})
	for !svc.Lines()[0].Up() {
		time.Sleep(time.Millisecond)
	}
	if addr == nil { // TLS only
		return svc, svc.TLSAddr.String()
	}
	return svc, addr.String()
}

// lineConfig is a gateway on any free port with one line, "l1", on path
// (8N2, 100 ms timeout) serving units 1-9, plus extra keys for the bus.
// Discovery is off, so that the line carries only the tests' requests
// (discovery's own tests turn it on).
func lineConfig(path, extra string) string {
	return fmt.Sprintf(`
[server]
listen = "127.0.0.1:0"
[[bus]]
name = "l1"
port = %q
parity = "N"
stop_bits = 2
timeout = "100ms"
units = ["1-9"]
discover = false
%s`, path, extra)
}

// startRig runs the gateway from a config over a virtual line to
// simulated units 1..3; units 4..9 are routed to the line but silent.
func startRig(t *testing.T, faults sim.Faults, extra string) *rig {
	t.Helper()
	return startRigWith(t, faults, "", extra)
}

// startRigWith is startRig with server, more keys for [server] (with
// a listen key of its own, it replaces the rig's; it may end with a
// [server.tls] table).
func startRigWith(t *testing.T, faults sim.Faults, server, extra string) *rig {
	t.Helper()
	dev := &sim.Line{Units: sim.NewUnits([]byte{1, 2, 3}, 10000), Faults: faults}
	path := onPty(t, dev)
	logs := &syncBuffer{}
	cfg := lineConfig(path, "retries = 1\nbroadcast_delay = \"5ms\"\n"+extra)
	if strings.Contains(server, "listen = ") {
		cfg = strings.Replace(cfg, "listen = \"127.0.0.1:0\"\n", "", 1)
	}
	cfg = strings.Replace(cfg, "[server]\n", "[server]\n"+server, 1)
	svc, addr := startService(t, cfg, slog.New(slog.NewJSONHandler(logs, nil)))
	return &rig{addr: addr, path: path, dev: dev, svc: svc, log: logs}
}

// onPty serves dev's simulated units at the far end of a new virtual
// line until the test ends (after the gateway's own cleanup, registered
// later), and returns the path the gateway opens.
func onPty(t *testing.T, dev *sim.Line) string {
	t.Helper()
	line, err := serialport.NewPty()
	if err != nil {
		t.Fatal(err)
	}
	dev.Port = line.Device
	stop := dev.Start()
	t.Cleanup(func() { stop(); line.Close() })
	return line.Path
}

func client(t *testing.T, addr string, unit byte) modbus.Client {
	t.Helper()
	h := modbus.NewTCPClientHandler(addr)
	h.SlaveId, h.Timeout = unit, 5*time.Second
	if err := h.Connect(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return modbus.NewClient(h)
}

// expect computes the answer PDU a unit's model gives to req, on a copy of
// the model, so that tests compare the gateway against the device.
func expect(m *registers.Model, req []byte) []byte {
	m.Lock()
	c := &registers.Model{Coils: append([]bool(nil), m.Coils...), Discrete: append([]bool(nil), m.Discrete...),
		Holding: append([]uint16(nil), m.Holding...), Input: append([]uint16(nil), m.Input...), ID: m.ID}
	m.Unlock()
	return c.Handle(req, nil)
}

// exchange sends one raw MBAP request and returns the answer's PDU.
func exchange(t *testing.T, c net.Conn, tid uint16, unit byte, req []byte) []byte {
	t.Helper()
	if _, err := c.Write(tcp.AppendADU(nil, tid, unit, req)); err != nil {
		t.Fatal(err)
	}
	return readAnswer(t, c, tid, unit)
}

func readAnswer(t *testing.T, c net.Conn, tid uint16, unit byte) []byte {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	hdr := make([]byte, tcp.HeaderLen)
	if _, err := io.ReadFull(c, hdr); err != nil {
		t.Fatalf("tid %d: %v", tid, err)
	}
	h, err := tcp.ParseHeader(hdr)
	if err != nil || h.TID != tid || h.Unit != unit {
		t.Fatalf("answer header %+v (%v), want tid %d unit %d", h, err, tid, unit)
	}
	body := make([]byte, h.PDULen())
	if _, err := io.ReadFull(c, body); err != nil {
		t.Fatal(err)
	}
	return body
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func be16(vs ...int) []byte {
	var b []byte
	for _, v := range vs {
		b = binary.BigEndian.AppendUint16(b, uint16(v))
	}
	return b
}

// TestEveryFunctionCode sends each function code the devices know, at its
// largest quantity, through the gateway and checks the answer against the
// device model's, byte for byte.
func TestEveryFunctionCode(t *testing.T) {
	r := startRig(t, sim.Faults{}, "")
	c := dial(t, r.addr)
	m := r.dev.Units[2]
	regs := make([]byte, 0, 246)
	for i := range 123 {
		regs = binary.BigEndian.AppendUint16(regs, uint16(0xA000+i))
	}
	coils := bytes.Repeat([]byte{0x5A}, 246)
	reqs := []struct {
		name string
		pdu  []byte
	}{
		{"01 read 2000 coils", append([]byte{0x01}, be16(100, 2000)...)},
		{"02 read 2000 discrete inputs", append([]byte{0x02}, be16(7000, 2000)...)},
		{"03 read 125 holding registers", append([]byte{0x03}, be16(9875, 125)...)},
		{"04 read 125 input registers", append([]byte{0x04}, be16(0, 125)...)},
		{"05 write coil", append([]byte{0x05}, be16(17, 0xFF00)...)},
		{"06 write register", append([]byte{0x06}, be16(18, 0xBEEF)...)},
		{"0F write 1968 coils", append(append([]byte{0x0F}, be16(3000, 1968)...), append([]byte{246}, coils...)...)},
		{"10 write 123 registers", append(append([]byte{0x10}, be16(500, 123)...), append([]byte{246}, regs...)...)},
		{"11 report server id", []byte{0x11}},
		{"16 mask write", append([]byte{0x16}, be16(18, 0x00F2, 0x0025)...)},
		{"17 read 125 / write 121", append(append([]byte{0x17}, be16(400, 125, 450, 121)...), append([]byte{242}, regs[:242]...)...)},
		{"2B/0E device id regular", []byte{0x2B, 0x0E, 0x02, 0x00}},
		{"2B/0E device id individual", []byte{0x2B, 0x0E, 0x04, 0x04}},
		{"03 exception 02 past the map", append([]byte{0x03}, be16(9990, 20)...)},
		{"03 exception 03 quantity 126", append([]byte{0x03}, be16(0, 126)...)},
		{"41 user-defined: exception 01", []byte{0x41, 0x00, 0x01}},
	}
	for i, tt := range reqs {
		want := expect(m, tt.pdu)
		got := exchange(t, c, uint16(i+1), 2, tt.pdu)
		if !bytes.Equal(got, want) {
			t.Errorf("%s: got % X, want % X", tt.name, got, want)
		}
	}
	// The writes reached the device.
	// (FC 23 rewrote 450..570 after FC 16 wrote 500..622.)
	if m.Holding[622] != 0xA000+122 || m.Holding[450] != 0xA000 || !m.Coils[17] || m.Holding[18] != (0xBEEF&0x00F2|0x0025&^0x00F2) {
		t.Errorf("writes not applied: %#x %#x %v %#x", m.Holding[622], m.Holding[450], m.Coils[17], m.Holding[18])
	}
}

func TestGoburrowClient(t *testing.T) {
	r := startRig(t, sim.Faults{}, "")
	cl := client(t, r.addr, 3)
	got, err := cl.ReadHoldingRegisters(10, 125)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 125 {
		if v := binary.BigEndian.Uint16(got[2*i:]); v != registers.PatternHolding(3, 10+i) {
			t.Fatalf("register %d = %d", 10+i, v)
		}
	}
	if _, err := cl.WriteMultipleRegisters(20, 2, be16(7, 8)); err != nil {
		t.Fatal(err)
	}
	if got, err := cl.ReadWriteMultipleRegisters(20, 2, 22, 1, be16(9)); err != nil || !bytes.Equal(got, be16(7, 8)) {
		t.Fatalf("FC 23: % X %v", got, err)
	}
	if got, err := cl.MaskWriteRegister(20, 0x00F2, 0x0025); err != nil || len(got) != 4 {
		t.Fatalf("FC 22: % X %v", got, err)
	}
	if got, err := cl.ReadCoils(0, 9); err != nil || !bytes.Equal(got, []byte{0x49, 0x00}) {
		t.Fatalf("coils: % X %v", got, err)
	}
}

func wantException(t *testing.T, err error, code byte) {
	t.Helper()
	if exceptionCode(err) != code {
		t.Fatalf("err = %v, want exception %#02x", err, code)
	}
}

func TestGatewayExceptions(t *testing.T) {
	r := startRig(t, sim.Faults{}, "")
	// The device's own exception, passed through.
	_, err := client(t, r.addr, 1).ReadHoldingRegisters(9999, 2)
	wantException(t, err, 0x02)
	// A unit routed to the line but silent: 0x0B after timeout and retries.
	_, err = client(t, r.addr, 7).ReadHoldingRegisters(0, 1)
	wantException(t, err, 0x0B)
	// No line serves unit 200: 0x0A at once, without touching the line.
	before := r.dev.Stats().Requests
	_, err = client(t, r.addr, 200).ReadHoldingRegisters(0, 1)
	wantException(t, err, 0x0A)
	if r.dev.Stats().Requests != before {
		t.Fatal("an unrouted request reached the line")
	}
}

func TestBroadcast(t *testing.T) {
	r := startRig(t, sim.Faults{}, "")
	c := dial(t, r.addr)
	c.Write(tcp.AppendADU(nil, 1, 0, append([]byte{0x06}, be16(42, 4242)...)))
	// The next answer on the connection is the read's: none for the broadcast.
	got := exchange(t, c, 2, 1, append([]byte{0x03}, be16(42, 1)...))
	if !bytes.Equal(got, append([]byte{0x03, 0x02}, be16(4242)...)) {
		t.Fatalf("read after broadcast: % X", got)
	}
	for _, u := range []byte{1, 2, 3} {
		if v := r.dev.Units[u].Holding[42]; v != 4242 {
			t.Fatalf("unit %d did not get the broadcast: %d", u, v)
		}
	}
}

func TestPipelined(t *testing.T) {
	r := startRig(t, sim.Faults{}, "")
	c := dial(t, r.addr)
	var batch []byte
	for i := range 16 {
		batch = tcp.AppendADU(batch, uint16(100+i), byte(1+i%3), append([]byte{0x03}, be16(i*10, 5)...))
	}
	c.Write(batch)
	for i := range 16 {
		unit := byte(1 + i%3)
		got := readAnswer(t, c, uint16(100+i), unit)
		want := expect(r.dev.Units[unit], append([]byte{0x03}, be16(i*10, 5)...))
		if !bytes.Equal(got, want) {
			t.Fatalf("pipelined %d: % X, want % X", i, got, want)
		}
	}
}

// TestConcurrentClientsNeverMixed: dozens of clients read random ranges of
// random units at once; every answer must be exactly that unit's values.
func TestConcurrentClientsNeverMixed(t *testing.T) {
	r := startRig(t, sim.Faults{}, "")
	var wg sync.WaitGroup
	errs := make(chan error, 48)
	for k := range 48 {
		wg.Go(func() {
			h := modbus.NewTCPClientHandler(r.addr)
			h.Timeout = 20 * time.Second
			defer h.Close()
			cl := modbus.NewClient(h)
			rnd := rand.New(rand.NewPCG(uint64(k), 7))
			for range 15 {
				unit := byte(1 + rnd.IntN(3))
				addr, qty := rnd.IntN(9000), 1+rnd.IntN(125)
				h.SlaveId = unit
				got, err := cl.ReadHoldingRegisters(uint16(addr), uint16(qty))
				if err != nil {
					errs <- fmt.Errorf("client %d: %w", k, err)
					return
				}
				for i := range qty {
					if v := binary.BigEndian.Uint16(got[2*i:]); v != registers.PatternHolding(unit, addr+i) {
						errs <- fmt.Errorf("client %d: unit %d register %d = %d: WRONG ANSWER", k, unit, addr+i, v)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestVanishingAndIdleClients(t *testing.T) {
	r := startRig(t, sim.Faults{Slow: 2 * time.Millisecond}, "")
	// 200 idle ones, from four addresses (max_conns_per_ip is 64 by
	// default).
	for i := range 200 {
		dialFrom(t, fmt.Sprintf("127.0.0.%d", 2+i%4), r.addr)
	}
	// Clients that send a request, or half of one, and hang up.
	for i := range 20 {
		c, err := net.Dial("tcp", r.addr)
		if err != nil {
			t.Fatal(err)
		}
		req := tcp.AppendADU(nil, uint16(i), 1, append([]byte{0x03}, be16(i, 3)...))
		if i%2 == 0 {
			req = req[:9]
		}
		c.Write(req)
		c.Close()
	}
	// Garbage on another connection.
	g := dial(t, r.addr)
	g.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	cl := client(t, r.addr, 2)
	for i := range 20 {
		got, err := cl.ReadHoldingRegisters(uint16(i), 2)
		if err != nil || !bytes.Equal(got, be16(int(registers.PatternHolding(2, i)), int(registers.PatternHolding(2, i+1)))) {
			t.Fatalf("working client beside 200 idle ones: % X %v", got, err)
		}
	}
	if n := r.svc.Server.NumConns(); n < 200 {
		t.Fatalf("idle connections dropped: %d open", n)
	}
}

func TestTransactionLog(t *testing.T) {
	r := startRig(t, sim.Faults{}, "")
	cl := client(t, r.addr, 1)
	cl.ReadHoldingRegisters(0, 1)
	cl.ReadCoils(0, 1)
	client(t, r.addr, 250).ReadHoldingRegisters(0, 1)
	var lines []map[string]any
	for l := range strings.SplitSeq(strings.TrimSpace(r.log.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line is not JSON: %q", l)
		}
		if m["msg"] == "transaction" {
			lines = append(lines, m)
		}
	}
	if len(lines) != 3 {
		t.Fatalf("%d transaction lines, want 3:\n%s", len(lines), r.log.String())
	}
	want := []struct {
		unit, fc float64
		outcome  string
	}{{1, 3, "ok"}, {1, 1, "ok"}, {250, 3, "no route"}}
	for i, w := range want {
		l := lines[i]
		if l["unit"] != w.unit || l["fc"] != w.fc || l["outcome"] != w.outcome || l["level"] != "INFO" {
			t.Errorf("line %d: %v", i, l)
		}
		for _, k := range []string{"client", "tid", "line", "duration", "attempts"} {
			if _, ok := l[k]; !ok {
				t.Errorf("line %d lacks %q: %v", i, k, l)
			}
		}
	}
	if lines[2]["exception"] != float64(pdu.GatewayPathUnavailable) {
		t.Errorf("no-route line: %v", lines[2])
	}
}

// TestUnitMap: unit_map sends the clients' units 101-103 to the line as
// 1-3, and each answer goes back under the id its client asked for.
func TestUnitMap(t *testing.T) {
	dev := &sim.Line{Units: sim.NewUnits([]byte{1, 2, 3}, 100)}
	path := onPty(t, dev)
	_, addr := startService(t, `
[server]
listen = "127.0.0.1:0"
[[bus]]
name = "mapped"
port = "`+path+`"
parity = "N"
timeout = "200ms"
units = ["101-103", 7]
unit_map = ["101-103:1"]
discover = false
`, slog.New(slog.DiscardHandler))
	c := dial(t, addr)
	for u := range byte(3) {
		// exchange checks the answer's MBAP unit id is the client's.
		got := exchange(t, c, uint16(u), 101+u, []byte{0x03, 0, 5, 0, 1})
		if want := registers.PatternHolding(1+u, 5); len(got) != 4 || int(got[2])<<8|int(got[3]) != int(want) {
			t.Fatalf("unit %d: % X, want the line's unit %d: %d", 101+u, got, 1+u, want)
		}
	}
	if dev.Seen(101) != 0 || dev.Seen(2) != 1 {
		t.Fatalf("the line saw unit 101 %d times, unit 2 %d times", dev.Seen(101), dev.Seen(2))
	}
	// Unit 7 is not mapped: it is 7 on the line, where no device answers.
	if got := exchange(t, c, 9, 7, []byte{0x03, 0, 5, 0, 1}); string(got) != "\x83\x0B" {
		t.Fatalf("unmapped unit 7: % X", got)
	}
}
