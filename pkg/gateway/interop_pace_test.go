package gateway_test

import (
	"context"
	"encoding/binary"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/goburrow/modbus"

	"github.com/mcpgw/mcpgw/internal/loadtest"
)

// The pace rigs with an independent device: a libmodbus 3.1.6 RTU slave
// on a pseudo-terminal line behind the gateway (timeout 300 ms, one
// retry). The tests assert that no answer is wrong and log what they
// measured; MCPGW_RIG_SECONDS makes them run longer (the bench's figures
// are for 10 s), MCPGW_RIG_SEED draws other faults.

func rigSeconds() time.Duration {
	if s, err := strconv.Atoi(os.Getenv("MCPGW_RIG_SECONDS")); err == nil && s > 0 {
		return time.Duration(s) * time.Second
	}
	return 3 * time.Second
}

// pollLibmodbus runs clients reading 10 holding registers at random
// addresses of unit for d, checking each value against rtu_slave.c's
// pattern. It returns the right answers and the 0x0B answers; any other
// error, or a wrong value, fails the test.
func pollLibmodbus(t *testing.T, addr string, unit byte, clients int, d time.Duration) (ok, busy int) {
	var good, gone atomic.Int64
	var wg sync.WaitGroup
	end := time.Now().Add(d)
	for k := range clients {
		wg.Go(func() {
			h := modbus.NewTCPClientHandler(addr)
			h.SlaveId, h.Timeout = unit, 10*time.Second
			defer h.Close()
			cl := modbus.NewClient(h)
			rnd := rand.New(rand.NewPCG(uint64(k), uint64(unit)))
			for time.Now().Before(end) {
				a := rnd.IntN(9000)
				got, err := cl.ReadHoldingRegisters(uint16(a), 10)
				if exceptionCode(err) == 0x0B {
					gone.Add(1)
					continue
				}
				if err != nil {
					t.Errorf("client %d: %v", k, err)
					return
				}
				for i := range 10 {
					if v, want := binary.BigEndian.Uint16(got[2*i:]), uint16((a+i)*7+int(unit)); v != want {
						t.Errorf("client %d: WRONG ANSWER: unit %d register %d = %d, want %d", k, unit, a+i, v, want)
						return
					}
				}
				good.Add(1)
			}
		})
	}
	wg.Wait()
	return int(good.Load()), int(gone.Load())
}

// TestLibmodbusFaultMix: the device drops 1 answer in 29, corrupts the
// CRC of 1 read in 11 and answers 1 in 37 late, by 450 ms; 16 checking
// clients. The faults allow about 40 good answers a second.
func TestLibmodbusFaultMix(t *testing.T) {
	a, b := socatLine(t)
	seed := os.Getenv("MCPGW_RIG_SEED") // the device's faults, drawn from rand()
	if seed == "" {
		seed = "9"
	}
	startPeer(t, libmodbusSlave(t), b, "115200", "N", "1", "29", "11", "37", "450", seed)
	addr := gatewayOn(t, a, "1", "300ms")
	d := rigSeconds()
	ok, busy := pollLibmodbus(t, addr, 1, 16, d)
	t.Logf("fault mix, 16 clients, %v: %d good answers (%.1f/s), %d 0x0B, none wrong", d, ok, float64(ok)/d.Seconds(), busy)
	if ok == 0 {
		t.Fatal("no good answer")
	}
}

// TestLibmodbusDeadUnit: unit 1 is a libmodbus slave, unit 2 is
// configured on the same line with no device. Four clients poll unit 1
// alone; then one more client polls unit 2 until it is offline (its
// failures hold the line: two timeouts and the quiet libmodbus slaves
// need after another unit's request), and then as fast as it is answered
// while the four poll unit 1 again.
func TestLibmodbusDeadUnit(t *testing.T) {
	addr, cl := deadUnitRig(t)
	d := rigSeconds()
	alone, _ := pollLibmodbus(t, addr, 1, 4, d)
	t.Logf("the dead unit went offline after %v", untilOffline(t, cl))
	var dead int
	var wg sync.WaitGroup
	wg.Go(func() {
		for end := time.Now().Add(d); time.Now().Before(end); {
			if _, err := cl.ReadHoldingRegisters(0, 1); exceptionCode(err) != 0x0B {
				t.Errorf("dead unit: %v, want 0x0B", err)
				return
			}
			dead++
		}
	})
	beside, _ := pollLibmodbus(t, addr, 1, 4, d)
	wg.Wait()
	t.Logf("%v each: unit 1 alone %d answers (%.0f/s), beside the offline unit polled %d times %d (%.0f/s): %.0f %%",
		d, alone, float64(alone)/d.Seconds(), dead, beside, float64(beside)/d.Seconds(), 100*float64(beside)/float64(max(1, alone)))
	if beside == 0 || dead < 10 {
		t.Fatalf("beside the offline unit: %d answers, the dead one answered %d times", beside, dead)
	}
}

// deadUnitRig starts a gateway on a line where unit 1 is a libmodbus
// slave and unit 2 is configured with no device, and returns the
// gateway's address and a client of unit 2.
func deadUnitRig(t *testing.T) (addr string, dead modbus.Client) {
	t.Helper()
	a, b := socatLine(t)
	startPeer(t, libmodbusSlave(t), b, "115200", "N", "1")
	addr = gatewayOn(t, a, "1-2", "300ms")
	h := modbus.NewTCPClientHandler(addr)
	h.SlaveId, h.Timeout = 2, 10*time.Second
	t.Cleanup(func() { h.Close() })
	return addr, modbus.NewClient(h)
}

// untilOffline polls a dead unit through cl until the gateway answers it
// 0x0B at once, and returns how long that took.
func untilOffline(t *testing.T, cl modbus.Client) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		s := time.Now()
		if _, err := cl.ReadHoldingRegisters(0, 1); exceptionCode(err) != 0x0B {
			t.Fatalf("dead unit: %v, want 0x0B", err)
		}
		if time.Since(s) < 50*time.Millisecond {
			return time.Since(start).Round(time.Millisecond) // answered at once: offline
		}
		if time.Since(start) > 10*time.Second {
			t.Fatal("the dead unit never went offline")
		}
	}
}

// TestLibmodbusHostile: unit 1 is a libmodbus slave, unit 2 is configured
// on the same line with no device. A good client polls unit 1 alone, and
// then, once unit 2 is offline, while 20 clients send what no device can
// use (loadtest.Hostile: function codes 0 and 128-255, wrong lengths,
// quantities beyond the spec, requests to the dead unit, broken headers)
// as fast as they are answered. None of the good client's requests may
// fail or be answered wrongly; how many it got is logged (the bench
// judges the rate, with the gateway in a process of its own: here the
// hostile clients share its runtime).
func TestLibmodbusHostile(t *testing.T) {
	addr, dead := deadUnitRig(t)
	d := rigSeconds()
	alone, _ := pollLibmodbus(t, addr, 1, 1, d)
	ctx, cancel := context.WithCancel(t.Context()) // ends with the test, if it fails
	sent := make(chan int)
	go func() { sent <- loadtest.Hostile(ctx, addr, 20, []byte{2}, 1) }()
	untilOffline(t, dead) // as a plant's would be, long before
	among, busy := pollLibmodbus(t, addr, 1, 1, d)
	cancel()
	n := <-sent
	t.Logf("%v each: the good client alone %d answers (%.0f/s), among 20 hostile clients (%d requests) %d (%.0f/s): %.0f %%",
		d, alone, float64(alone)/d.Seconds(), n, among, float64(among)/d.Seconds(), 100*float64(among)/float64(max(1, alone)))
	if busy > 0 || among == 0 || n == 0 {
		t.Fatalf("among the hostile clients: %d answers, %d of them 0x0B; the hostile clients sent %d", among, busy, n)
	}
}
