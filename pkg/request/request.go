// Package request is the contract every part of the gateway shares: a
// Modbus request as it travels the chain of handlers, from whichever
// side it came (a Modbus TCP or RTU over TCP client, a slave line's
// master, a Sparkplug host's command, agent mode's polls, discovery), and
// the Handler that answers it. Handlers are composed like net/http
// middleware: a Middleware wraps the next handler, and Chain lists them
// top to bottom.
package request

import (
	"context"
	"net/netip"
	"time"

	"github.com/mcpgw/mcpgw/pkg/pdu"
	"github.com/mcpgw/mcpgw/pkg/trace"
)

// Request is one Modbus request. PDU points into its connection's buffer
// and is valid only until the handler returns.
type Request struct {
	TID    uint16 // the MBAP transaction id (0 where there is none)
	Unit   byte
	PDU    []byte
	Client string         // the client's address, host:port, or the gateway's own requester's name
	Addr   netip.AddrPort // the client's address, parsed; invalid for the gateway's own requesters
	ConnID uint64         // the client's connection, unique in the process; 0 for the gateway's own
	Trace  trace.ID       // the transaction's id in the logs
	Role   string         // the client's Modbus/TCP Security role, or the requester's own (see the access rules); empty: none
	Peer   string         // on a TLS connection, the client certificate's subject; empty on a plain one
	// Background marks the gateway's own requests (agent mode's polls),
	// which no client sent: they go after every client's on the line.
	Background bool
	// Skip, if set by a handler, is asked by the serial line when the
	// request's turn comes: true ends it there without a frame (Outcome
	// Skipped). The offline rule sets it: a request that waited in the
	// queue while its unit went offline is not sent.
	Skip func() bool
	// Unknown, set by a handler (the offline rule), marks a request to a
	// unit not known to answer: the line gives it one attempt and takes
	// the silence it may cost from its budget (rtu.Request.Unknown).
	Unknown bool
	// Probe marks an Unknown request that probes an offline unit, not
	// the first request to a unit never heard (rtu.Request.Probe).
	Probe bool
	// Via binds the request to one line, by name, whatever its unit id:
	// a slave line's requests go only to its forward. Empty: routed by
	// unit id, as every TCP client's.
	Via string

	// What the handlers that served the request report of it, for the
	// transaction log and the metrics; Reset clears them. The handler
	// that answers sets Outcome (Pending: OK or Exception from the
	// answer) and, for the log only, Err with the detail; one that hands
	// it to a serial line sets Line and Attempts.
	Line     string
	Outcome  Outcome
	Err      error
	Attempts int
}

// Reset clears what the handlers report, for the next request on a
// connection.
func (r *Request) Reset() {
	r.Line, r.Outcome, r.Err, r.Attempts = "", Pending, nil, 0
	r.Skip, r.Unknown, r.Probe = nil, false, false
}

// Result is how r ended, given the answer PDU its handlers returned
// (nil: none, a broadcast): the outcome a handler reported, else OK or
// Exception; and the exception code if the answer is one (0 if not).
func (r *Request) Result(answer []byte) (outcome Outcome, exception byte) {
	isExc := len(answer) >= 2 && answer[0]&0x80 != 0
	if isExc {
		exception = answer[1]
	}
	outcome = r.Outcome
	if outcome == Pending {
		outcome = OK
		if isExc {
			outcome = Exception
		}
	}
	return outcome, exception
}

// Handler answers Modbus requests. ServeModbus appends the response PDU
// (normal or exception) to dst and returns it; a nil result means no
// answer is sent (a broadcast). It is called from many connections at
// once; each connection calls it for one request at a time, in order.
type Handler interface {
	ServeModbus(ctx context.Context, r *Request, dst []byte) []byte
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, r *Request, dst []byte) []byte

func (f HandlerFunc) ServeModbus(ctx context.Context, r *Request, dst []byte) []byte {
	return f(ctx, r, dst)
}

// Middleware wraps the next handler in one that does one thing (logs,
// counts, authorizes, answers from a cache) and calls next for what it
// does not answer itself.
type Middleware func(next Handler) Handler

// Chain returns the handler that runs a request through mws in order,
// the first outermost, and then last.
func Chain(last Handler, mws ...Middleware) Handler {
	h := last
	for i := len(mws) - 1; i >= 0; i-- {
		h = mws[i](h)
	}
	return h
}

// Done describes a finished transaction to an observer (see Observe).
type Done struct {
	Outcome   Outcome       // as Result gives it
	Exception byte          // the exception code, 0 if the answer is none
	Start     time.Time     // when the request reached the observer
	Duration  time.Duration // until its answer was ready
}

// Observe wraps next: after each transaction it calls f with the request
// and how it ended. The log, the metrics and the status page are such
// observers.
func Observe(next Handler, f func(ctx context.Context, r *Request, d Done)) Handler {
	return HandlerFunc(func(ctx context.Context, r *Request, dst []byte) []byte {
		start := time.Now()
		n := len(dst)
		out := next.ServeModbus(ctx, r, dst)
		var answer []byte
		if out != nil {
			answer = out[n:]
		}
		outcome, exc := r.Result(answer)
		f(ctx, r, Done{Outcome: outcome, Exception: exc, Start: start, Duration: time.Since(start)})
		return out
	})
}

// Refuse is how a handler answers a request itself, with the gateway's
// exception e: it records the outcome o and appends the exception to dst,
// or returns nil for a broadcast, which gets no answer.
func (r *Request) Refuse(dst []byte, o Outcome, e pdu.Exception) []byte {
	r.Outcome = o
	if r.Unit == pdu.Broadcast || len(r.PDU) == 0 {
		return nil
	}
	return pdu.AppendException(dst, r.PDU[0], e)
}
