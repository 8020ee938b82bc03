// Package access decides who may do what through the gateway. A Policy
// is the [[access]] tables of config.toml, first match wins: each names
// the clients it is for (Modbus/TCP Security roles, client networks), the
// units, and what they may do (read, read-write or nothing). Handler
// answers a denied request with exception 01 before it reaches a line, as
// the Modbus/TCP Security specification asks.
package access

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sync/atomic"

	"github.com/mcpgw/mcpgw/pkg/pdu"
	"github.com/mcpgw/mcpgw/pkg/tcp"
)

// Allow is what a rule lets its clients do.
type Allow uint8

const (
	None      Allow = iota // nothing
	Read                   // read function codes only (see IsRead)
	ReadWrite              // every function code
)

var allowNames = [...]string{"none", "read", "read-write"}

func (a Allow) String() string { return allowNames[a] }

// ParseAllow parses "none", "read" or "read-write".
func ParseAllow(s string) (Allow, error) {
	if i := slices.Index(allowNames[:], s); i >= 0 {
		return Allow(i), nil
	}
	return None, fmt.Errorf("%q: must be \"read\", \"read-write\" or \"none\"", s)
}

// IsRead reports whether function code fc only reads: 1, 2, 3, 4, 7, 8,
// 11, 12, 17, 20, 24 and 43. Everything else, FC 23 (which also writes)
// and codes the gateway does not know included, needs ReadWrite.
func IsRead(fc byte) bool {
	switch fc {
	case pdu.ReadCoils, pdu.ReadDiscreteInputs, pdu.ReadHoldingRegisters, pdu.ReadInputRegisters,
		pdu.ReadExceptionStatus, pdu.Diagnostics, pdu.GetCommEventCounter, pdu.GetCommEventLog,
		pdu.ReportServerID, pdu.ReadFileRecord, pdu.ReadFIFOQueue, pdu.EncapsulatedInterface:
		return true
	}
	return false
}

// Rule is one [[access]] table. An empty field matches any client or
// unit.
type Rule struct {
	Roles   []string       // Modbus/TCP Security roles; a client without one matches only rules without roles
	Sources []netip.Prefix // client networks
	Units   []byte         // unit ids; a broadcast (unit 0) matches only rules without units
	Allow   Allow
}

func (r *Rule) matches(role string, src netip.Addr, unit byte) bool {
	if len(r.Roles) > 0 && (role == "" || !slices.Contains(r.Roles, role)) {
		return false
	}
	if len(r.Sources) > 0 && !slices.ContainsFunc(r.Sources, func(p netip.Prefix) bool { return p.Contains(src.Unmap()) }) {
		return false
	}
	return len(r.Units) == 0 || slices.Contains(r.Units, unit)
}

// Policy is the list of rules, in the order of the file. With no rules at
// all everything is allowed; with rules, a request that no rule matches
// is denied.
type Policy struct {
	Rules []Rule
}

// Allows reports whether a client with role (empty: none) at src may send
// function code fc to unit. The first rule that matches the client and
// the unit decides.
func (p *Policy) Allows(role string, src netip.Addr, unit, fc byte) bool {
	if p == nil || len(p.Rules) == 0 {
		return true
	}
	for i := range p.Rules {
		r := &p.Rules[i]
		if !r.matches(role, src, unit) {
			continue
		}
		switch r.Allow {
		case ReadWrite:
			return true
		case Read:
			return IsRead(fc)
		}
		return false
	}
	return false
}

// Handler hands the requests its policy allows to Next and answers the
// others with exception 01 (illegal function), with outcome "denied"; a
// denied broadcast is dropped, as a broadcast is never answered.
type Handler struct {
	Next   tcp.Handler
	policy atomic.Pointer[Policy]
	denied atomic.Uint64
}

// NewHandler returns a Handler with policy p in front of next.
func NewHandler(p *Policy, next tcp.Handler) *Handler {
	h := &Handler{Next: next}
	h.policy.Store(p)
	return h
}

// SetPolicy replaces the policy; requests already past it are not
// affected.
func (h *Handler) SetPolicy(p *Policy) { h.policy.Store(p) }

// Denied returns how many requests were denied.
func (h *Handler) Denied() uint64 { return h.denied.Load() }

// ServeModbus implements tcp.Handler.
func (h *Handler) ServeModbus(ctx context.Context, tr *tcp.Request, dst []byte) []byte {
	var fc byte
	if len(tr.PDU) > 0 {
		fc = tr.PDU[0]
	}
	if h.policy.Load().Allows(tr.Role, tr.Addr.Addr(), tr.Unit, fc) {
		return h.Next.ServeModbus(ctx, tr, dst)
	}
	h.denied.Add(1)
	tr.Outcome = "denied"
	if tr.Unit == pdu.Broadcast {
		return nil
	}
	return pdu.AppendException(dst, fc, pdu.IllegalFunction)
}
