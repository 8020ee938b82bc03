package request

// Outcome is how a transaction ended: a closed set of names, which the
// log and the metrics' outcome label show. The detail of a failure (what
// a broken answer was) goes to Request.Err, for the log, never into the
// name: a label value per distinct garbage would grow the metrics
// without bound.
type Outcome uint8

const (
	Pending     Outcome = iota // not reported: OK or Exception, from the answer (see Result)
	OK                         // the device's answer
	Exception                  // the device's own exception
	Shared                     // another client's identical read's answer (shared reads)
	Cached                     // from the values the line returned lately (the cache)
	Broadcast                  // a broadcast sent: no answer
	Timeout                    // no valid answer after every attempt (Err says what was heard, if anything): 0x0B
	NoRoute                    // no line serves the unit: 0x0A
	LineDown                   // the unit's line is down: 0x0A
	QueueFull                  // the line's queue is full: 0x06
	Expired                    // waited longer than the line's queue_timeout: 0x0B
	Skipped                    // not sent: its unit went offline while it waited (the offline rule answers it)
	Offline                    // its unit is offline: 0x0B at once
	OverBudget                 // to a unit not known to answer, beyond the line's silence budget: 0x0B at once
	Rejected                   // no device can use it (function code, length, quantities): 01 or 03 at once
	Denied                     // the access rules deny it: 01 at once
	RateLimited                // beyond the client's rate: 06 at once
	numOutcomes
)

var outcomeNames = [numOutcomes]string{
	"pending", "ok", "exception", "shared", "cache", "broadcast", "timeout", "no route", "line down",
	"queue full", "expired", "skipped", "offline", "over budget", "rejected", "denied", "rate-limited",
}

func (o Outcome) String() string {
	if o < numOutcomes {
		return outcomeNames[o]
	}
	return "pending"
}

// Outcomes returns every name String gives: the set the metrics' outcome
// label takes its values from.
func Outcomes() []string { return outcomeNames[1:] }

// ByDevice reports whether an answer with this outcome is the device's:
// its answer to this request (OK, Exception), or to an identical one
// (Shared), or values it returned lately (Cached). Any other outcome is
// the gateway's.
func (o Outcome) ByDevice() bool {
	switch o {
	case OK, Exception, Shared, Cached:
		return true
	}
	return false
}
