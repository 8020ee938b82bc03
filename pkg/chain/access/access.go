// Package access decides who may do what through the gateway. A Policy
// is the [[access]] tables of config.toml, first match wins: each names
// the clients it is for (Modbus/TCP Security roles, client networks), the
// units, and what they may do (read, read-write or nothing). Handler
// answers a denied request with exception 01 before it reaches a line, as
// the Modbus/TCP Security specification asks.
//
// "read" is a closed list of function codes that cannot change a device
// (pdu.ReadOnly): 1, 2, 3, 4, 7, 11, 12, 17, 20, 24, and 43 with MEI type
// 14. Diagnostics (FC 08) is not a read: its sub-functions restart a
// device's communications, clear its counters and force it into
// listen-only mode, silent for every master until it is restarted.
package access

import (
	"context"
	"net/netip"
	"slices"
	"sync/atomic"

	"github.com/mcpgw/mcpgw/pkg/pdu"
	"github.com/mcpgw/mcpgw/pkg/request"
)

// Allow is what a rule lets its clients do.
type Allow uint8

const (
	None      Allow = iota // nothing
	Read                   // read function codes only (pdu.ReadOnly)
	ReadWrite              // every function code
)

var allowNames = [...]string{"none", "read", "read-write"}

func (a Allow) String() string { return allowNames[a] }

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

// Allows reports whether a client with role (empty: none) at src may
// send request PDU req to unit. The first rule that matches the client
// and the unit decides.
func (p *Policy) Allows(role string, src netip.Addr, unit byte, req []byte) bool {
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
			return pdu.ReadOnly(req)
		}
		return false
	}
	return false
}

// AllowsBroadcast reports whether a client may send request PDU req as a
// broadcast that reaches the units in reach: the broadcast itself must
// be allowed (by a rule without units, as unit 0 matches no other), and
// so must req to every unit it reaches, since each of them acts on it.
func (p *Policy) AllowsBroadcast(role string, src netip.Addr, req, reach []byte) bool {
	if !p.Allows(role, src, pdu.Broadcast, req) {
		return false
	}
	for _, u := range reach {
		if !p.Allows(role, src, u, req) {
			return false
		}
	}
	return true
}

// Handler hands the requests its policy allows to Next and answers the
// others with exception 01 (illegal function), with outcome "denied"; a
// denied broadcast is dropped, as a broadcast is never answered.
type Handler struct {
	Next request.Handler
	// Reach, if set, returns the unit ids (as clients address them) that
	// a broadcast request would reach: the units of every line it would
	// go out on. Without it a broadcast is judged as unit 0 alone.
	Reach  func(tr *request.Request) []byte
	policy atomic.Pointer[Policy]
	denied atomic.Uint64
}

// New returns a Handler with policy p; put it in the chain with
// Middleware.
func New(p *Policy) *Handler {
	h := &Handler{}
	h.policy.Store(p)
	return h
}

// Middleware puts h in front of next, in the chain.
func (h *Handler) Middleware(next request.Handler) request.Handler {
	h.Next = next
	return h
}

// SetPolicy replaces the policy; requests already past it are not
// affected.
func (h *Handler) SetPolicy(p *Policy) { h.policy.Store(p) }

// Denied returns how many requests were denied.
func (h *Handler) Denied() uint64 { return h.denied.Load() }

// ServeModbus implements request.Handler.
func (h *Handler) ServeModbus(ctx context.Context, tr *request.Request, dst []byte) []byte {
	p, src := h.policy.Load(), tr.Addr.Addr()
	var ok bool
	if tr.Unit == pdu.Broadcast {
		var reach []byte
		if h.Reach != nil {
			reach = h.Reach(tr)
		}
		ok = p.AllowsBroadcast(tr.Role, src, tr.PDU, reach)
	} else {
		ok = p.Allows(tr.Role, src, tr.Unit, tr.PDU)
	}
	if ok {
		return h.Next.ServeModbus(ctx, tr, dst)
	}
	h.denied.Add(1)
	return tr.Refuse(dst, request.Denied, pdu.IllegalFunction)
}
