package access

import (
	"context"
	"net/netip"
	"testing"

	"github.com/mcpgw/mcpgw/pkg/pdu"
	"github.com/mcpgw/mcpgw/pkg/tcp"
)

func TestIsRead(t *testing.T) {
	reads := map[byte]bool{1: true, 2: true, 3: true, 4: true, 7: true, 8: true, 11: true, 12: true, 17: true, 20: true, 24: true, 43: true}
	for fc := range 256 {
		if got := IsRead(byte(fc)); got != reads[byte(fc)] {
			t.Errorf("IsRead(%d) = %v", fc, got)
		}
	}
}

func TestParseAllow(t *testing.T) {
	for s, want := range map[string]Allow{"none": None, "read": Read, "read-write": ReadWrite} {
		if got, err := ParseAllow(s); err != nil || got != want || got.String() != s {
			t.Errorf("%q: %v, %v", s, got, err)
		}
	}
	for _, bad := range []string{"", "rw", "write", "READ"} {
		if _, err := ParseAllow(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestPolicy(t *testing.T) {
	net := func(s string) netip.Prefix { return netip.MustParsePrefix(s) }
	p := &Policy{Rules: []Rule{
		{Roles: []string{"operator"}, Units: []byte{1, 2, 3}, Allow: ReadWrite},
		{Roles: []string{"engineer"}, Allow: ReadWrite},
		{Sources: []netip.Prefix{net("10.9.0.0/16")}, Allow: None},
		{Sources: []netip.Prefix{net("10.0.0.0/8")}, Units: []byte{1, 2, 3, 4}, Allow: Read},
	}}
	lan, blocked, outside := netip.MustParseAddr("10.1.2.3"), netip.MustParseAddr("10.9.0.1"), netip.MustParseAddr("192.168.1.1")
	mapped := netip.MustParseAddr("::ffff:10.1.2.3")
	for _, c := range []struct {
		name     string
		role     string
		src      netip.Addr
		unit, fc byte
		want     bool
	}{
		{"operator writes its unit", "operator", outside, 2, pdu.WriteSingleRegister, true},
		// First match wins: the operator's rule does not cover unit 4, the
		// LAN rule does, read only.
		{"operator on the LAN, unit 4, read", "operator", lan, 4, pdu.ReadHoldingRegisters, true},
		{"operator on the LAN, unit 4, write", "operator", lan, 4, pdu.WriteSingleRegister, false},
		{"operator outside, unit 4", "operator", outside, 4, pdu.ReadHoldingRegisters, false},
		{"engineer anywhere", "engineer", outside, 200, pdu.WriteMultipleRegisters, true},
		{"plain client on the LAN reads", "", lan, 1, pdu.ReadInputRegisters, true},
		{"plain client on the LAN writes", "", lan, 1, pdu.WriteSingleCoil, false},
		{"FC 23 writes too", "", lan, 1, pdu.ReadWriteMultipleRegisters, false},
		{"an unknown code needs read-write", "", lan, 1, 0x41, false},
		{"IPv4 in IPv6 is the IPv4 address", "", mapped, 1, pdu.ReadCoils, true},
		{"a blocked subnet first", "", blocked, 1, pdu.ReadCoils, false},
		{"no rule matches", "", outside, 1, pdu.ReadCoils, false},
		{"a role no rule names", "viewer", outside, 1, pdu.ReadCoils, false},
		{"a broadcast matches no rule with units", "", lan, 0, pdu.WriteSingleRegister, false},
	} {
		if got := p.Allows(c.role, c.src, c.unit, c.fc); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
	if !(&Policy{}).Allows("", outside, 1, pdu.WriteSingleCoil) || !(*Policy)(nil).Allows("", outside, 0, 0x41) {
		t.Error("no rules: everything must be allowed")
	}
}

// TestHandler: denied requests get exception 01 (a broadcast nothing) and
// never reach the next handler.
func TestHandler(t *testing.T) {
	reached := 0
	next := tcp.HandlerFunc(func(_ context.Context, r *tcp.Request, dst []byte) []byte {
		reached++
		return append(dst, r.PDU...)
	})
	h := NewHandler(&Policy{Rules: []Rule{{Units: []byte{1}, Allow: Read}}}, next)
	src := netip.MustParseAddrPort("127.0.0.1:5000")
	serve := func(unit byte, p ...byte) (*tcp.Request, []byte) {
		r := &tcp.Request{Unit: unit, PDU: p, Addr: src}
		return r, h.ServeModbus(context.Background(), r, nil)
	}
	if r, out := serve(1, 3, 0, 0, 0, 1); string(out) != string([]byte{3, 0, 0, 0, 1}) || r.Outcome != "" {
		t.Fatalf("allowed read: % X, %q", out, r.Outcome)
	}
	if r, out := serve(1, 6, 0, 0, 0, 1); string(out) != string([]byte{0x86, 0x01}) || r.Outcome != "denied" {
		t.Fatalf("denied write: % X, %q", out, r.Outcome)
	}
	if r, out := serve(2, 3, 0, 0, 0, 1); string(out) != string([]byte{0x83, 0x01}) || r.Outcome != "denied" {
		t.Fatalf("unit without a rule: % X, %q", out, r.Outcome)
	}
	if r, out := serve(0, 6, 0, 0, 0, 1); out != nil || r.Outcome != "denied" {
		t.Fatalf("denied broadcast: % X, %q", out, r.Outcome)
	}
	if reached != 1 || h.Denied() != 3 {
		t.Fatalf("next reached %d times, %d denied", reached, h.Denied())
	}
	h.SetPolicy(nil)
	if _, out := serve(2, 6, 0, 0, 0, 1); out == nil || out[0] != 6 {
		t.Fatalf("no policy: % X", out)
	}
}
