package rtu

import (
	"errors"
	"time"

	"github.com/mcpgw/mcpgw/pkg/trace"
)

// A request on the line, and how its transaction ended.

// Outcome is how a transaction ended.
type Outcome uint8

const (
	OK         Outcome = iota // an answer arrived (normal or the device's exception)
	Sent                      // a broadcast went out; no answer is expected
	Timeout                   // no valid answer after every attempt
	LineDown                  // the port is closed or failed
	QueueFull                 // the line's queue is full
	Expired                   // waited in the queue longer than QueueTimeout
	Skipped                   // Skip said, when its turn came, that it need not go out
	OverBudget                // Unknown, and the line's silence budget had no room for it: not sent
)

var outcomeNames = [...]string{"ok", "broadcast", "timeout", "line down", "queue full", "expired", "skipped", "over budget"}

func (o Outcome) String() string { return outcomeNames[o] }

// Request is one transaction for the bus. The caller fills the request
// fields, calls Bus.Do, and reads the result fields after it returns. A
// Request may be reused for the next transaction once Do has returned.
type Request struct {
	Unit    byte
	PDU     []byte        // the request PDU: function code and data
	Timeout time.Duration // per attempt; 0 means the bus's default
	Retries int           // further attempts after the first; <0 means the bus's default
	// Priority puts the request in the line's priority class (writes,
	// operators' clients), served before plain reads.
	Priority bool
	// Background puts it after every other request (the gateway's own
	// polls, agent mode); Priority wins over it.
	Background bool
	// Trace is the transaction's id in the logs; the line's log lines
	// about it carry it.
	Trace trace.ID
	// Skip, if set, is asked when the request's turn on the line comes,
	// once the line is quiet for it: true ends it there, Skipped, without
	// a frame. What decided it should go out may have changed while it
	// waited (its unit went offline, see package offline).
	Skip func() bool
	// Flow is the client the request comes from (a connection): the
	// line's time is shared fairly between flows (see queue).
	Flow uint64
	// Unknown marks a request to a unit not known to answer: the first
	// to a unit that has never answered, or a probe of an offline one.
	// It gets one attempt, and the time it may lose to silence is taken
	// from the line's silence budget (see silence): without room it is
	// not sent (OverBudget).
	Unknown bool
	// Probe marks an Unknown request that probes an offline unit (not
	// the first request to a unit never heard).
	Probe bool
	// Gap is the least silence before each of its frames, if its device
	// needs more than the line's FrameGap (a slow device that does not
	// hear a frame sent sooner after the last one).
	Gap time.Duration

	// Results.
	Resp     []byte  // the answer's PDU when Outcome is OK; owned by the Request
	Outcome  Outcome // how it ended
	Err      error   // for Timeout: the last attempt's failure (ErrNoAnswer, ErrBadCRC, ...)
	Attempts int     // frames sent

	enqueued time.Time
	done     chan struct{}
	adu      []byte
	tag      int64 // fair queuing: its flow's finish tag when it was queued
	budgeted bool  // it took the silence budget (see silence)
}

// ErrNoAnswer means an attempt heard nothing valid before its timeout.
var ErrNoAnswer = errors.New("rtu: no answer")

// errTrailing marks bytes after a good answer.
var errTrailing = errors.New("rtu: bytes after the answer")

// ErrMismatch means a frame from the right unit and function answered a
// different request (its byte count or echo does not fit).
var ErrMismatch = errors.New("rtu: answer does not fit the request")
