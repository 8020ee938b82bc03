package gateway_test

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mcpgw/mcpgw/internal/specframes"
	"github.com/mcpgw/mcpgw/pkg/config"
	"github.com/mcpgw/mcpgw/pkg/rtu"
	"github.com/mcpgw/mcpgw/pkg/tcp"
	"github.com/mcpgw/mcpgw/pkg/tools/sim"
	"github.com/mcpgw/mcpgw/pkg/wire/serialport"
)

// The access rules tried as an attacker would: what a client may not do
// must not reach the line, whatever the function code, length or unit.
// A wire tap (socat -x between the gateway's end of the line and the
// device's) shows every byte the gateway sent.

// tap is a wire tap on a virtual serial line.
type tap struct {
	out *syncBuffer // socat's dump
}

// tappedLine serves dev's units behind a tap until the test ends and
// returns the path the gateway opens.
func tappedLine(t *testing.T, dev *sim.Line) (string, *tap) {
	t.Helper()
	need(t, "socat")
	dir := t.TempDir()
	gw, devEnd := filepath.Join(dir, "gateway"), filepath.Join(dir, "device")
	tp := &tap{out: &syncBuffer{}}
	cmd := exec.Command("socat", "-x", "pty,raw,echo=0,link="+gw, "pty,raw,echo=0,link="+devEnd)
	cmd.Stderr = tp.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		_, e1 := os.Stat(gw)
		_, e2 := os.Stat(devEnd)
		if e1 == nil && e2 == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("socat did not make its ptys")
		}
	}
	p, err := serialport.Open(devEnd, serialport.Settings{Baud: 19200, DataBits: 8, Parity: 'N', StopBits: 2})
	if err != nil {
		t.Fatal(err)
	}
	dev.Port = p
	stop := dev.Start()
	t.Cleanup(func() { stop(); p.Close() })
	return gw, tp
}

// sent returns every byte the gateway has put on the line.
func (tp *tap) sent(t *testing.T) []byte {
	t.Helper()
	var out []byte
	toDevice := false
	sc := bufio.NewScanner(strings.NewReader(tp.out.String()))
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "> "):
			toDevice = true
		case strings.HasPrefix(line, "< "):
			toDevice = false
		case strings.HasPrefix(line, " ") && toDevice:
			b, err := hex.DecodeString(strings.ReplaceAll(strings.TrimSpace(line), " ", ""))
			if err != nil {
				t.Fatalf("tap: %q: %v", line, err)
			}
			out = append(out, b...)
		}
	}
	return out
}

// TestReadMeansRead: a client that the rules let only read cannot change
// a device by any function code, length or broadcast: diagnostics (FC 08)
// of any sub-function or length, FC 43 with a MEI type other than 14,
// user-defined codes and a broadcast that would reach a read-only unit
// get exception 01 (the broadcast is dropped), and an FC 08 that carries
// a second frame behind it gets 03 before any rule. None reaches the
// line: the tap sees exactly the requests that were allowed. A client
// that may write gets FC 08's echo whole, however long, and its unit
// stays online.
func TestReadMeansRead(t *testing.T) {
	dev := &sim.Line{Units: sim.NewUnits([]byte{1, 2, 3}, 1000)}
	path, tp := tappedLine(t, dev)
	logs := &syncBuffer{}
	svc, addr := startService(t, lineConfig(path, `retries = 0
broadcast_delay = "5ms"
[[access]]
sources = ["127.0.0.2/32"]
allow = "read-write"
[[access]]
units = ["1-3"]
allow = "read"
[[access]]
allow = "read-write"
`), slog.New(slog.NewJSONHandler(logs, nil)))
	ro := dial(t, addr) // 127.0.0.1: reads units 1-3, writes 4-9
	rw := dialFrom(t, "127.0.0.2", addr)
	h := specframes.MustHex
	var wire []byte // what the tap must see, in order
	tid := uint16(0)
	ask := func(c net.Conn, unit byte, req string) []byte {
		tid++
		return exchange(t, c, tid, unit, h(req))
	}
	for _, tc := range []struct {
		name, req, want string
	}{
		{"return query data", "08 0000 A537", "88 01"},
		{"return query data, long", "08 0000 0102 0304 0506 0708", "88 01"},
		{"restart communications", "08 0001 0000", "88 01"},
		{"force listen only", "08 0004 0000", "88 01"},
		{"clear counters", "08 000A 0000", "88 01"},
		{"force listen only with a write frame behind it", "08 0004 0000 0106 0001 0003 980B", "88 03"},
		{"a sub-function without its data", "08 0004", "88 03"},
		{"CANopen general reference", "2B 0D 00 01 02 03", "AB 01"},
		{"another MEI type", "2B 0F 01", "AB 01"},
		{"user-defined 65", "41 0102", "C1 01"},
		{"user-defined 100", "64", "E4 01"},
		{"write single register", "06 0001 0003", "86 01"},
		{"mask write register", "16 0001 00F2 0025", "96 01"},
	} {
		if got := ask(ro, 1, tc.req); !bytes.Equal(got, h(tc.want)) {
			t.Errorf("read-only client, %s (%s): % X, want %s", tc.name, tc.req, got, tc.want)
		}
	}
	// What it may do: reads (every unit is heard once first, so that the
	// write to absent unit 5 below leaves none of them to the line's
	// silence budget) and device identification.
	for u := byte(1); u <= 3; u++ {
		if got := ask(ro, u, "03 0000 0001"); got[0] != 0x03 {
			t.Fatalf("unit %d: % X", u, got)
		}
		wire = rtu.AppendADU(wire, u, h("03 0000 0001"))
	}
	m := dev.Units[1]
	for _, req := range []string{"03 0000 0002", "04 0001 0001", "2B 0E 01 00", "01 0000 0010"} {
		if got := ask(ro, 1, req); !bytes.Equal(got, expect(m, h(req))) {
			t.Errorf("read-only client, %s: % X, want the device's % X", req, got, expect(m, h(req)))
		}
		wire = rtu.AppendADU(wire, 1, h(req))
	}
	// A broadcast reaches units 1-3, read-only for it: dropped, with no
	// answer (the next answer on the connection is the next request's).
	tid++
	ro.Write(tcp.AppendADU(nil, tid, 0, h("06 0001 0003")))
	if got := ask(ro, 2, "03 0001 0001"); !bytes.Equal(got, expect(dev.Units[2], h("03 0001 0001"))) {
		t.Fatalf("after a denied broadcast: % X", got)
	}
	wire = rtu.AppendADU(wire, 2, h("03 0001 0001"))
	// A broadcast read asks for an answer no device gives: dropped too.
	tid++
	ro.Write(tcp.AppendADU(nil, tid, 0, h("03 0000 0001")))
	// The same write to a unit it may write goes out (and finds no one).
	if got := ask(ro, 5, "06 0001 0003"); !bytes.Equal(got, h("86 0B")) {
		t.Errorf("write to unit 5: % X, want 86 0B", got)
	}
	wire = rtu.AppendADU(wire, 5, h("06 0001 0003"))

	// The read-write client: return query data, longer than 8 bytes,
	// echoed whole, again and again, and the unit stays online.
	long := "08 0000 0102 0304 0506 0708 090A 0B0C"
	for i := range 4 {
		if got := ask(rw, 1, long); !bytes.Equal(got, h(long)) {
			t.Fatalf("return query data %d: % X, want the echo", i, got)
		}
		wire = rtu.AppendADU(wire, 1, h(long))
	}
	if svc.Offline.Offline(1) {
		t.Fatal("unit 1 went offline over correct echoes")
	}
	// Its broadcast goes out, and every unit takes it.
	tid++
	rw.Write(tcp.AppendADU(nil, tid, 0, h("06 0001 0007")))
	wire = rtu.AppendADU(wire, 0, h("06 0001 0007"))
	for u := byte(1); u <= 3; u++ {
		if got := ask(rw, u, "03 0001 0001"); !bytes.Equal(got, h("03 02 0007")) {
			t.Errorf("unit %d after the broadcast: % X", u, got)
		}
		wire = rtu.AppendADU(wire, u, h("03 0001 0001"))
	}

	// The tap: exactly the allowed requests, in order.
	var got []byte
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if got = tp.sent(t); len(got) >= len(wire) {
			break
		}
	}
	if !bytes.Equal(got, wire) {
		t.Fatalf("on the line:\n% X\nwant only what was allowed:\n% X", got, wire)
	}
	for _, l := range transactions(t, logs.String()) {
		if l["outcome"] == "timeout" && l["unit"] != float64(5) {
			t.Errorf("a transaction failed: %v", l)
		}
	}
}

// TestMappedSourceDenies: a rule written with an IPv4-mapped address
// matches the IPv4 client it names.
func TestMappedSourceDenies(t *testing.T) {
	r := startRig(t, sim.Faults{}, `
[[access]]
sources = ["::ffff:127.0.0.1"]
allow = "none"
[[access]]
allow = "read-write"
`)
	if got := exchange(t, dial(t, r.addr), 1, 1, []byte{0x03, 0, 0, 0, 1}); !bytes.Equal(got, []byte{0x83, 0x01}) {
		t.Fatalf("127.0.0.1 under a rule for ::ffff:127.0.0.1: % X, want 83 01", got)
	}
	if got := exchange(t, dialFrom(t, "127.0.0.2", r.addr), 2, 1, []byte{0x03, 0, 0, 0, 1}); got[0] != 0x03 {
		t.Fatalf("127.0.0.2: % X", got)
	}
}

// TestDefaultConnsPerIP: with no limit set, one address's idle
// connections cannot fill max_conns: past the default
// max_conns_per_ip they are refused, and another address is served.
func TestDefaultConnsPerIP(t *testing.T) {
	r := startRig(t, sim.Faults{}, "")
	for range 300 {
		c, err := net.Dial("tcp", r.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	// Refused ones are closed at once; give the accept loop a moment.
	n := 0
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if n = r.svc.Server.NumConns(); n == 64 {
			break
		}
	}
	if n != 64 {
		t.Fatalf("%d idle connections from one address held, want the default 64", n)
	}
	if got := exchange(t, dialFrom(t, "127.0.0.2", r.addr), 1, 1, []byte{0x03, 0, 0, 0, 1}); got[0] != 0x03 {
		t.Fatalf("another address beside them: % X", got)
	}
	if !strings.Contains(r.log.String(), `"key":"server.max_conns_per_ip"`) {
		t.Error("the refusals are not logged with the key")
	}
}

// TestTwoTablesOnOnePort: a [[bus]] cannot reach a device another one
// refuses by giving it another unit id on the same port.
func TestTwoTablesOnOnePort(t *testing.T) {
	dev := &sim.Line{Units: sim.NewUnits([]byte{1}, 100)}
	path := onPty(t, dev)
	cfg := fmt.Sprintf(`
[[bus]]
name = "a"
port = %q
units = [1]
[[bus]]
name = "b"
port = %q
units = [101]
unit_map = ["101:1"]
`, path, filepath.Join(filepath.Dir(path), ".", filepath.Base(path)))
	if _, err := config.Parse(cfg); err == nil || !strings.Contains(err.Error(), `already the port of bus "a"`) {
		t.Fatalf("two tables on %s: %v", path, err)
	}
}
