package gateway_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mcpgw/mcpgw/pkg/gateway"
)

// The tests of devices as they are: libmodbus slaves given each quirk
// (RTU_SLAVE_QUIRKS), behind pseudo-terminal lines, polled through the
// gateway by independent clients (goburrow, mbpoll), every value checked
// against the slave's pattern: holding register i of unit u holds
// i*7+u, input register i holds i*3+u, coil i is on when i%4 == 0.

// quirkyRig starts a libmodbus slave as unit 1 with quirks and a gateway
// whose line serves units with the [[bus]] and [[bus.device]] keys in
// lineKeys and deviceKeys (no device table if empty).
func quirkyRig(t *testing.T, quirks, units, lineKeys, deviceKeys string) (*gateway.Service, string) {
	t.Helper()
	gwEnd, devEnd := socatLine(t)
	startPeerEnv(t, []string{"RTU_SLAVE_QUIRKS=" + quirks}, libmodbusSlave(t), devEnd, "115200", "N", "1")
	cfg := fmt.Sprintf(`
[server]
listen = "127.0.0.1:0"
self_unit = 255
[[bus]]
name = "quirky"
port = %q
parity = "N"
stop_bits = 2
timeout = "300ms"
retries = 1
discover = false
units = [%q]
%s
`, gwEnd, units, lineKeys)
	if deviceKeys != "" {
		cfg += "[[bus.device]]\nunit = 1\n" + deviceKeys + "\n"
	}
	return startService(t, cfg, slog.New(slog.DiscardHandler))
}

// TestSplitReads: a device that answers at most 10 registers (and 16
// bits) at once; reads of 100 holding and 60 input registers and of 50
// coils come back whole and right, each in one answer. Without the
// quirk the same device refuses them.
func TestSplitReads(t *testing.T) {
	need(t, "mbpoll")
	_, plain := quirkyRig(t, "max_registers=10,max_bits=16", "1", "", "")
	if _, err := client(t, plain, 1).ReadHoldingRegisters(0, 100); exceptionCode(err) != 0x03 {
		t.Fatalf("without max_registers the device answered a read of 100: %v", err)
	}
	_, addr := quirkyRig(t, "max_registers=10,max_bits=16", "1", "max_bits = 16", "max_registers = 10")
	cl := client(t, addr, 1)
	b, err := cl.ReadHoldingRegisters(5, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != 200 {
		t.Fatalf("100 holding registers: %d bytes", len(b))
	}
	checkRegs(t, "100 holding registers", b, 5, func(i int) int { return i*7 + 1 })
	if b, err = cl.ReadInputRegisters(1000, 60); err != nil {
		t.Fatal(err)
	}
	if len(b) != 120 {
		t.Fatalf("60 input registers: %d bytes", len(b))
	}
	checkRegs(t, "60 input registers", b, 1000, func(i int) int { return i*3 + 1 })
	if b, err = cl.ReadCoils(3, 50); err != nil {
		t.Fatal(err)
	}
	checkBits(t, "50 coils", b, 3, 50, func(i int) bool { return i%4 == 0 })
	// A part beyond the device's registers: the client gets that part's
	// exception, not a partial answer.
	if _, err := cl.ReadHoldingRegisters(9950, 100); exceptionCode(err) != 0x02 {
		t.Fatalf("a read running past the device's registers: %v, want exception 02", err)
	}
	// mbpoll, an independent client, reads 100 at once through it.
	host, port, _ := strings.Cut(addr, ":")
	vals := mbpoll(t, "-m", "tcp", "-p", port, "-a", "1", "-0", "-r", "200", "-c", "100", "-1", host)
	for i := 200; i < 300; i++ {
		if vals[i] != (i*7+1)&0xFFFF {
			t.Fatalf("mbpoll: register %d is %d (%d values)", i, vals[i], len(vals))
		}
	}
}

// TestSingleWritesTheDeviceLacks: a device without FC 6 and FC 5; the
// client's FC 6 and FC 5 go as FC 16 and FC 15 of one, the client sees
// FC 6's and FC 5's normal answers, and reads its writes back.
func TestSingleWritesTheDeviceLacks(t *testing.T) {
	_, plain := quirkyRig(t, "no_fc6,no_fc5", "1", "", "")
	if _, err := client(t, plain, 1).WriteSingleRegister(10, 0x1234); exceptionCode(err) != 0x01 {
		t.Fatalf("without single_register_write the device took FC 6: %v", err)
	}
	_, addr := quirkyRig(t, "no_fc6,no_fc5", "1", "", "single_register_write = \"fc16\"\nsingle_coil_write = \"fc15\"")
	cl := client(t, addr, 1)
	// goburrow checks FC 6's answer: the echo of the request.
	if b, err := cl.WriteSingleRegister(10, 0x1234); err != nil || binary.BigEndian.Uint16(b) != 0x1234 {
		t.Fatalf("FC 6: % X, %v", b, err)
	}
	if b, err := cl.ReadHoldingRegisters(10, 1); err != nil || binary.BigEndian.Uint16(b) != 0x1234 {
		t.Fatalf("read back: % X, %v", b, err)
	}
	if b, err := cl.WriteSingleCoil(1, 0xFF00); err != nil || binary.BigEndian.Uint16(b) != 0xFF00 {
		t.Fatalf("FC 5: % X, %v", b, err)
	}
	if b, err := cl.ReadCoils(1, 1); err != nil || b[0] != 1 {
		t.Fatalf("coil read back: % X, %v", b, err)
	}
	// The device's exception comes back under the client's code.
	if _, err := cl.WriteSingleRegister(20000, 1); exceptionCode(err) != 0x02 {
		t.Fatalf("FC 6 beyond the device's registers: %v, want exception 02", err)
	}
}

// TestDeviceFrameGap: a device that does not hear a request sent sooner
// than 20 ms after its answer, polled back to back by 4 clients. With
// frame_gap = "25ms" on its [[bus.device]] every frame is heard: no
// failure, no wrong value, no retry. Without it the line needs retries.
func TestDeviceFrameGap(t *testing.T) {
	poll := func(addr string) (answers, failed int) {
		var mu sync.Mutex
		var wg sync.WaitGroup
		ctx, cancel := context.WithTimeout(t.Context(), 1500*time.Millisecond)
		defer cancel()
		for c := range 4 {
			wg.Go(func() {
				cl := client(t, addr, 1)
				for a := c * 10; ctx.Err() == nil; a++ {
					b, err := cl.ReadHoldingRegisters(uint16(a%1000), 2)
					mu.Lock()
					if err != nil {
						failed++
					} else if int(binary.BigEndian.Uint16(b)) != (a%1000)*7+1 {
						failed++
						t.Errorf("register %d: % X", a%1000, b)
					} else {
						answers++
					}
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		return answers, failed
	}
	plain, plainAddr := quirkyRig(t, "gap_ms=20", "1", "", "")
	poll(plainAddr)
	if st := plain.Lines()[0].Stats(); st.Frames <= st.Requests {
		t.Fatalf("without frame_gap: %d frames for %d transactions; the device heard them all", st.Frames, st.Requests)
	}
	svc, addr := quirkyRig(t, "gap_ms=20", "1", "", "frame_gap = \"25ms\"")
	answers, failed := poll(addr)
	st := svc.Lines()[0].Stats()
	t.Logf("frame_gap 25ms: %d answers, %d failed, %d frames for %d transactions", answers, failed, st.Frames, st.Requests)
	if failed > 0 || answers == 0 || st.Frames != st.Requests {
		t.Fatalf("frame_gap 25ms: %d answers, %d failed, %d frames for %d transactions", answers, failed, st.Frames, st.Requests)
	}
}

// TestSelfUnit: unit 255 is the gateway: unit 1 (a libmodbus slave)
// reads online, unit 2 (configured, absent) offline, and unit 1 offline
// within a probe of its device stopping; its registers hold the line's
// state; writes are refused.
func TestSelfUnit(t *testing.T) {
	need(t, "mbpoll")
	gwEnd, devEnd := socatLine(t)
	slave := startPeerEnv(t, nil, libmodbusSlave(t), devEnd, "115200", "N", "1")
	svc, addr := startService(t, fmt.Sprintf(`
[server]
listen = "127.0.0.1:0"
self_unit = 255
[[bus]]
name = "line"
port = %q
parity = "N"
stop_bits = 2
timeout = "300ms"
discover = false
offline_after = 1
probe_interval = "300ms"
units = ["1-2"]
`, gwEnd), slog.New(slog.DiscardHandler))
	one, self := client(t, addr, 1), client(t, addr, 255)
	if _, err := one.ReadHoldingRegisters(0, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := client(t, addr, 2).ReadHoldingRegisters(0, 1); exceptionCode(err) != 0x0B {
		t.Fatalf("absent unit 2: %v", err)
	}
	if b, err := self.ReadDiscreteInputs(0, 3); err != nil || b[0] != 0b010 {
		t.Fatalf("units 0-2 online: % X, %v; want unit 1 only", b, err)
	}
	// mbpoll, independently: discrete inputs 1 and 2.
	host, port, _ := strings.Cut(addr, ":")
	if v := mbpoll(t, "-m", "tcp", "-p", port, "-a", "255", "-t", "1", "-0", "-r", "1", "-c", "2", "-1", host); v[1] != 1 || v[2] != 0 {
		t.Fatalf("mbpoll: units 1-2 online: %v", v)
	}
	b, err := self.ReadInputRegisters(0, 30)
	if err != nil {
		t.Fatal(err)
	}
	r := func(i int) int { return int(binary.BigEndian.Uint16(b[2*i:])) }
	st := svc.Lines()[0].Stats()
	if version := strings.TrimRight(string(b[4:20]), "\x00"); version != gateway.Version || r(10) != 1 {
		t.Fatalf("version %q, %d lines", version, r(10))
	}
	if r(20) != 1 || r(21) != 0 || r(22)<<16|r(23) != int(st.Requests) || r(24)<<16|r(25) != int(st.Timeouts) || r(28) != 0 {
		t.Fatalf("line 0: % X (the line's counters %+v)", b[40:60], st)
	}
	if h, err := self.ReadHoldingRegisters(10, 1); err != nil || binary.BigEndian.Uint16(h) != 1 {
		t.Fatalf("holding register 10 (the input registers' mirror): % X, %v", h, err)
	}
	if _, err := self.WriteSingleRegister(0, 1); exceptionCode(err) != 0x01 {
		t.Fatalf("a write to the gateway's unit: %v, want exception 01", err)
	}
	if _, err := self.ReadInputRegisters(30, 1); exceptionCode(err) != 0x02 {
		t.Fatalf("beyond the map: %v, want exception 02", err)
	}
	// The device stops answering: unit 1 reads offline once a request
	// finds it silent (offline_after = 1), and online again within a
	// probe of its coming back.
	slave.Process.Kill()
	slave.Wait()
	one.ReadHoldingRegisters(0, 1)
	if b, err := self.ReadDiscreteInputs(1, 1); err != nil || b[0] != 0 {
		t.Fatalf("unit 1 after its device stopped: % X, %v", b, err)
	}
	startPeerEnv(t, nil, libmodbusSlave(t), devEnd, "115200", "N", "1")
	back := time.Now()
	for {
		one.ReadHoldingRegisters(0, 1) // 0x0B while offline, but for the probe
		if b, err := self.ReadDiscreteInputs(1, 1); err == nil && b[0] == 1 {
			break
		}
		if time.Since(back) > 5*time.Second {
			t.Fatal("unit 1 never read online again")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestRS485OnAPty: rs485 = true on a pseudo-terminal, which has no RS-485
// mode: that line is down with a log line naming rs485 and the port, its
// units get 0x0A, the gateway's own unit says why (4), and the other line
// serves on.
func TestRS485OnAPty(t *testing.T) {
	rsEnd, _ := socatLine(t)
	gwEnd, devEnd := socatLine(t)
	startPeer(t, libmodbusSlave(t), devEnd, "115200", "N", "1")
	logs := &syncBuffer{}
	_, addr := startService(t, fmt.Sprintf(`
[server]
listen = "127.0.0.1:0"
self_unit = 255
[[bus]]
name = "good"
port = %q
parity = "N"
stop_bits = 2
units = [1]
[[bus]]
name = "rs"
port = %q
rs485 = true
rts_delay_after = "1ms"
units = [5]
`, gwEnd, rsEnd), slog.New(slog.NewTextHandler(logs, nil)))
	if b, err := client(t, addr, 1).ReadHoldingRegisters(3, 2); err != nil || binary.BigEndian.Uint16(b) != 3*7+1 {
		t.Fatalf("the other line: % X, %v", b, err)
	}
	if _, err := client(t, addr, 5).ReadHoldingRegisters(0, 1); exceptionCode(err) != 0x0A {
		t.Fatalf("a unit on the rs485 line: %v, want 0x0A", err)
	}
	log := logs.String()
	if !strings.Contains(log, "serial line down") || !strings.Contains(log, "rs485: "+rsEnd) {
		t.Fatalf("no log line naming rs485 and %s:\n%s", rsEnd, log)
	}
	b, err := client(t, addr, 255).ReadInputRegisters(20, 12)
	if err != nil {
		t.Fatal(err)
	}
	if good, up, why := binary.BigEndian.Uint16(b), binary.BigEndian.Uint16(b[20:]), binary.BigEndian.Uint16(b[22:]); up != 0 || why != 4 || good != 1 {
		t.Fatalf("the gateway's unit: rs line up %d why %d, good line up %d", up, why, good)
	}
}

// TestConnectDelay: a Modbus TCP device line (pymodbus's TCP server
// behind a proxy that notes when the gateway connects and when its first
// request comes) with connect_delay = "400ms": the first request reaches
// the device no sooner than 400 ms after the connection, and is answered
// right.
func TestConnectDelay(t *testing.T) {
	need(t, "/usr/bin/python3")
	devAddr := freeLoopback(t)
	startTCPDevice(t, devAddr, "1")
	proxy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proxy.Close() })
	waited := make(chan time.Duration, 1)
	go func() {
		c, err := proxy.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		at := time.Now()
		d, err := net.Dial("tcp", devAddr)
		if err != nil {
			return
		}
		defer d.Close()
		// The first request, whole: pymodbus's framer drops a frame
		// that reaches it in pieces.
		first := make([]byte, 7, 260)
		if _, err := io.ReadFull(c, first); err != nil {
			return
		}
		waited <- time.Since(at)
		first = first[:6+int(binary.BigEndian.Uint16(first[4:6]))]
		if _, err := io.ReadFull(c, first[7:]); err != nil {
			return
		}
		d.Write(first)
		go io.Copy(c, d)
		io.Copy(d, c)
	}()
	_, addr := startService(t, `
[server]
listen = "127.0.0.1:0"
[[bus]]
name = "dongle"
port = "modbus+tcp://`+proxy.Addr().String()+`"
connect_delay = "400ms"
timeout = "5s"
units = [1]
`, slog.New(slog.DiscardHandler))
	got, err := client(t, addr, 1).ReadHoldingRegisters(7, 1)
	if err != nil || binary.BigEndian.Uint16(got) != 177 {
		t.Fatalf("register 7: % X, %v", got, err)
	}
	if d := <-waited; d < 400*time.Millisecond {
		t.Fatalf("the first request came %v after the connection, want 400ms or more", d)
	}
}
