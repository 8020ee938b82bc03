package access

import (
	"context"
	"net/netip"
	"testing"

	"github.com/mcpgw/mcpgw/pkg/pdu"
	"github.com/mcpgw/mcpgw/pkg/request"
)

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
	req := func(fc byte, data ...byte) []byte { return append([]byte{fc}, append(data, 0, 0, 0, 1)...) }
	for _, c := range []struct {
		name string
		role string
		src  netip.Addr
		unit byte
		req  []byte
		want bool
	}{
		{"operator writes its unit", "operator", outside, 2, req(pdu.WriteSingleRegister), true},
		// First match wins: the operator's rule does not cover unit 4, the
		// LAN rule does, read only.
		{"operator on the LAN, unit 4, read", "operator", lan, 4, req(pdu.ReadHoldingRegisters), true},
		{"operator on the LAN, unit 4, write", "operator", lan, 4, req(pdu.WriteSingleRegister), false},
		{"operator outside, unit 4", "operator", outside, 4, req(pdu.ReadHoldingRegisters), false},
		{"engineer anywhere", "engineer", outside, 200, req(pdu.WriteMultipleRegisters), true},
		{"plain client on the LAN reads", "", lan, 1, req(pdu.ReadInputRegisters), true},
		{"plain client on the LAN writes", "", lan, 1, req(pdu.WriteSingleCoil), false},
		{"FC 23 writes too", "", lan, 1, req(pdu.ReadWriteMultipleRegisters), false},
		{"an unknown code needs read-write", "", lan, 1, req(0x41), false},
		{"IPv4 in IPv6 is the IPv4 address", "", mapped, 1, req(pdu.ReadCoils), true},
		{"a blocked subnet first", "", blocked, 1, req(pdu.ReadCoils), false},
		{"no rule matches", "", outside, 1, req(pdu.ReadCoils), false},
		{"a role no rule names", "viewer", outside, 1, req(pdu.ReadCoils), false},
		{"a broadcast matches no rule with units", "", lan, 0, req(pdu.WriteSingleRegister), false},
		{"diagnostics is not a read", "", lan, 1, []byte{pdu.Diagnostics, 0, 0, 0xA5, 0x37}, false},
		{"force listen only is not a read", "", lan, 1, []byte{pdu.Diagnostics, 0, 4, 0, 0}, false},
		{"device identification is a read", "", lan, 1, []byte{pdu.EncapsulatedInterface, pdu.MEIReadDeviceID, 1, 0}, true},
		{"CANopen general reference is not", "", lan, 1, []byte{pdu.EncapsulatedInterface, 0x0D, 0, 1}, false},
		{"read FIFO queue is a read", "", lan, 1, []byte{pdu.ReadFIFOQueue, 0, 1}, true},
	} {
		if got := p.Allows(c.role, c.src, c.unit, c.req); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
	if !(&Policy{}).Allows("", outside, 1, req(pdu.WriteSingleCoil)) || !(*Policy)(nil).Allows("", outside, 0, req(0x41)) {
		t.Error("no rules: everything must be allowed")
	}
}

// TestAllowsBroadcast: a broadcast is a write to every unit it reaches,
// so a rule that makes any of them read-only denies it, even when a later
// rule for all units allows writes.
func TestAllowsBroadcast(t *testing.T) {
	lan := netip.MustParseAddr("10.1.2.3")
	write := []byte{pdu.WriteSingleRegister, 0, 1, 0, 3}
	p := &Policy{Rules: []Rule{
		{Units: []byte{1, 2, 3}, Allow: Read},
		{Allow: ReadWrite},
	}}
	for _, c := range []struct {
		name  string
		reach []byte
		want  bool
	}{
		{"reaches a read-only unit", []byte{2, 7}, false},
		{"reaches only writable units", []byte{4, 5, 6}, true},
		{"reaches no configured unit", nil, true},
	} {
		if got := p.AllowsBroadcast("", lan, write, c.reach); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
	// Without a rule for all units, unit 0 matches none: denied.
	only := &Policy{Rules: []Rule{{Units: []byte{4, 5}, Allow: ReadWrite}}}
	if only.AllowsBroadcast("", lan, write, []byte{4, 5}) {
		t.Error("a broadcast allowed with no rule that covers unit 0")
	}
}

// TestHandler: denied requests get exception 01 (a broadcast nothing) and
// never reach the next handler.
func TestHandler(t *testing.T) {
	reached := 0
	next := request.HandlerFunc(func(_ context.Context, r *request.Request, dst []byte) []byte {
		reached++
		return append(dst, r.PDU...)
	})
	h := New(&Policy{Rules: []Rule{{Units: []byte{1}, Allow: Read}}})
	h.Middleware(next)
	src := netip.MustParseAddrPort("127.0.0.1:5000")
	serve := func(unit byte, p ...byte) (*request.Request, []byte) {
		r := &request.Request{Unit: unit, PDU: p, Addr: src}
		return r, h.ServeModbus(context.Background(), r, nil)
	}
	if r, out := serve(1, 3, 0, 0, 0, 1); string(out) != string([]byte{3, 0, 0, 0, 1}) || r.Outcome != request.Pending {
		t.Fatalf("allowed read: % X, %q", out, r.Outcome)
	}
	if r, out := serve(1, 6, 0, 0, 0, 1); string(out) != string([]byte{0x86, 0x01}) || r.Outcome != request.Denied {
		t.Fatalf("denied write: % X, %q", out, r.Outcome)
	}
	if r, out := serve(2, 3, 0, 0, 0, 1); string(out) != string([]byte{0x83, 0x01}) || r.Outcome != request.Denied {
		t.Fatalf("unit without a rule: % X, %q", out, r.Outcome)
	}
	if r, out := serve(0, 6, 0, 0, 0, 1); out != nil || r.Outcome != request.Denied {
		t.Fatalf("denied broadcast: % X, %q", out, r.Outcome)
	}
	if reached != 1 || h.Denied() != 3 {
		t.Fatalf("next reached %d times, %d denied", reached, h.Denied())
	}
	h.SetPolicy(nil)
	if _, out := serve(2, 6, 0, 0, 0, 1); out == nil || out[0] != 6 {
		t.Fatalf("no policy: % X", out)
	}
	// A broadcast is judged by the units it reaches.
	h.SetPolicy(&Policy{Rules: []Rule{{Units: []byte{1}, Allow: Read}, {Allow: ReadWrite}}})
	reach := []byte{1, 2}
	h.Reach = func(*request.Request) []byte { return reach }
	before := reached
	if r, out := serve(0, 6, 0, 0, 0, 1); out != nil || r.Outcome != request.Denied || reached != before {
		t.Fatalf("broadcast reaching read-only unit 1: % X, %q", out, r.Outcome)
	}
	reach = []byte{2, 3}
	if r, _ := serve(0, 6, 0, 0, 0, 1); r.Outcome == request.Denied || reached != before+1 {
		t.Fatalf("broadcast reaching writable units: %q", r.Outcome)
	}
}
