package gateway_test

import (
	"errors"
	"io"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/mcpgw/mcpgw/pkg/tcp"
	"github.com/mcpgw/mcpgw/pkg/tools/sim"
)

// The tests of the access rules and network limits, through the
// whole gateway. Every address in 127.0.0.0/8 reaches the loopback on
// Linux, so a client can come from 127.0.0.2 as from another host.

// dialFrom connects to addr from the local address from (port chosen by
// the system).
func dialFrom(t *testing.T, from, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// closedAtAccept reports whether the gateway closed c without a word.
func closedAtAccept(t *testing.T, c net.Conn) bool {
	t.Helper()
	c.Write(tcp.AppendADU(nil, 1, 1, []byte{0x03, 0, 0, 0, 1}))
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := c.Read(make([]byte, 1))
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("the connection was neither served nor closed")
	}
	return err != nil
}

const accessRules = `
[[access]]
sources = ["127.0.0.2/32"]
allow = "read-write"
[[access]]
sources = ["127.0.0.0/8"]
units = ["1-2"]
allow = "read"
[[access]]
units = ["9"]
allow = "none"
`

// TestAccessRules: first match wins; a write without read-write, a unit
// no rule covers and a client no rule covers get exception 01 at once,
// are logged denied and never reach the line; a denied broadcast is
// dropped.
func TestAccessRules(t *testing.T) {
	r := startRig(t, sim.Faults{}, accessRules)
	ro := dial(t, r.addr) // from 127.0.0.1: read only, units 1-2
	rw := dialFrom(t, "127.0.0.2", r.addr)
	read := []byte{0x03, 0, 10, 0, 2}
	write := []byte{0x06, 0, 10, 0x12, 0x34}
	tests := []struct {
		name  string
		c     net.Conn
		unit  byte
		pdu   []byte
		allow bool
	}{
		{"read, unit 1", ro, 1, read, true},
		{"write, unit 1, read-only client", ro, 1, write, false},
		{"FC 23 needs read-write", ro, 2, []byte{0x17, 0, 0, 0, 1, 0, 5, 0, 1, 2, 0, 7}, false},
		{"an unknown function code needs read-write", ro, 2, []byte{0x41, 0, 1}, false},
		{"read, unit 3, no rule for it", ro, 3, read, false},
		{"write, unit 3, read-write client", rw, 3, write, true},
		{"read, unit 9 (silent), first match is the 127.0.0.2 rule", rw, 9, read, true},
	}
	sent, want := 0, 1 // the denied broadcast below
	for i, tt := range tests {
		got := exchange(t, tt.c, uint16(i+1), tt.unit, tt.pdu)
		switch {
		case tt.allow && tt.unit <= 3 && got[0]&0x80 != 0:
			t.Errorf("%s: % X, want the device's answer", tt.name, got)
		case tt.allow && tt.unit == 9 && string(got) != "\x83\x0b":
			t.Errorf("%s: % X, want 0x0B from the line", tt.name, got)
		case !tt.allow && string(got) != string([]byte{tt.pdu[0] | 0x80, 0x01}):
			t.Errorf("%s: % X, want exception 01", tt.name, got)
		}
		if tt.allow && tt.unit <= 3 { // units 1-3 are the simulated devices
			sent++
		}
		if !tt.allow {
			want++
		}
	}
	// A denied broadcast gets no answer: the next answer on the
	// connection is the next request's.
	if _, err := ro.Write(tcp.AppendADU(nil, 50, 0, write)); err != nil {
		t.Fatal(err)
	}
	if got := exchange(t, ro, 51, 1, read); got[0] != 0x03 {
		t.Fatalf("after a denied broadcast: % X", got)
	}
	sent++
	if n := int(r.dev.Stats().Requests); n != sent {
		t.Fatalf("the devices saw %d requests, %d were allowed", n, sent)
	}
	denied := 0
	for _, l := range transactions(t, r.log.String()) {
		if l["outcome"] == "denied" {
			denied++
		}
	}
	if denied != want || r.svc.Access.Denied() != uint64(want) {
		t.Fatalf("%d denied in the log, %d counted, want %d", denied, r.svc.Access.Denied(), want)
	}
}

// TestAccessWithMbpoll: an independent client (mbpoll) reads where its
// rule allows it and gets "Illegal function" for a write.
func TestAccessWithMbpoll(t *testing.T) {
	need(t, "mbpoll")
	r := startRig(t, sim.Faults{}, accessRules)
	host, port, _ := net.SplitHostPort(r.addr)
	vals := mbpoll(t, "-m", "tcp", "-p", port, "-a", "1", "-0", "-r", "10", "-c", "2", "-1", "-o", "2", host)
	if len(vals) != 2 {
		t.Fatalf("mbpoll read: %v", vals)
	}
	out, err := exec.Command("mbpoll", "-m", "tcp", "-p", port, "-a", "1", "-0", "-r", "10", "-1", "-o", "2", host, "4660").CombinedOutput()
	if err == nil || !strings.Contains(strings.ToLower(string(out)), "illegal function") {
		t.Fatalf("mbpoll write from a read-only client: %v\n%s", err, out)
	}
	if n := r.dev.Stats().Requests; n != 1 {
		t.Fatalf("the line carried %d requests, want the one read", n)
	}
}

// TestServerAllow: a client outside [server] allow is closed at accept;
// max_conns_per_ip caps one address's connections and not another's.
func TestServerAllow(t *testing.T) {
	r := startRigWith(t, sim.Faults{}, "allow = [\"127.0.0.2/32\", \"127.0.0.3\"]\nmax_conns_per_ip = 2\n", "")
	if !closedAtAccept(t, dial(t, r.addr)) {
		t.Fatal("a client from 127.0.0.1, outside server.allow, was served")
	}
	a, b := dialFrom(t, "127.0.0.2", r.addr), dialFrom(t, "127.0.0.2", r.addr)
	for i, c := range []net.Conn{a, b} {
		if got := exchange(t, c, uint16(i+1), 1, []byte{0x03, 0, 0, 0, 1}); got[0] != 0x03 {
			t.Fatalf("connection %d from 127.0.0.2: % X", i+1, got)
		}
	}
	if !closedAtAccept(t, dialFrom(t, "127.0.0.2", r.addr)) {
		t.Fatal("a third connection from 127.0.0.2 was served: max_conns_per_ip = 2")
	}
	if got := exchange(t, dialFrom(t, "127.0.0.3", r.addr), 9, 1, []byte{0x03, 0, 0, 0, 1}); got[0] != 0x03 {
		t.Fatalf("another address: % X", got)
	}
	a.Close() // a slot for 127.0.0.2 again
	deadline := time.Now().Add(5 * time.Second)
	for {
		c := dialFrom(t, "127.0.0.2", r.addr)
		c.Write(tcp.AppendADU(nil, 7, 1, []byte{0x03, 0, 0, 0, 1}))
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(c, make([]byte, tcp.HeaderLen)); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the slot of a closed connection was not given back")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := r.dev.Stats().Requests; n != 4 {
		t.Fatalf("the line carried %d requests, want the 4 served", n)
	}
	if !strings.Contains(r.log.String(), `"key":"server.allow"`) || !strings.Contains(r.log.String(), `"key":"server.max_conns_per_ip"`) {
		t.Fatalf("refusals not logged with their key:\n%s", r.log.String())
	}
}

// TestRateLimit: a client beyond rate_limit requests per second gets 06
// at once, logged rate-limited, without touching the line; another
// address keeps its own budget.
func TestRateLimit(t *testing.T) {
	r := startRigWith(t, sim.Faults{}, "rate_limit = 5\n", "")
	c, other := dial(t, r.addr), dialFrom(t, "127.0.0.2", r.addr)
	ok, busy := 0, 0
	for i := range 8 {
		switch got := exchange(t, c, uint16(i+1), 1, []byte{0x03, 0, 0, 0, 1}); {
		case got[0] == 0x03:
			ok++
		case string(got) == "\x83\x06":
			busy++
		default:
			t.Fatalf("request %d: % X", i+1, got)
		}
	}
	// Eight requests in well under a second: the burst of 5, perhaps one
	// more refilled, the rest 06.
	if ok < 5 || ok > 6 || busy != 8-ok {
		t.Fatalf("%d answered, %d busy", ok, busy)
	}
	if got := exchange(t, other, 1, 1, []byte{0x03, 0, 0, 0, 1}); got[0] != 0x03 {
		t.Fatalf("another address: % X", got)
	}
	if n := int(r.dev.Stats().Requests); n != ok+1 {
		t.Fatalf("the line carried %d requests, %d were within the rate", n, ok+1)
	}
	if n := strings.Count(r.log.String(), `"outcome":"rate-limited"`); n != busy || r.svc.Limits.Limited() != uint64(busy) {
		t.Fatalf("%d rate-limited in the log, %d counted, want %d", n, r.svc.Limits.Limited(), busy)
	}
}
