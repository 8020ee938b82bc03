package gateway

import (
	"log/slog"

	"github.com/mcpgw/mcpgw/pkg/request"
)

// chain is the chain every request runs through, top to bottom, whoever
// sent it (a Modbus TCP, TLS or RTU over TCP client, a slave line's
// master, a Sparkplug host's write). Each entry is a request.Middleware;
// one that answers a request itself does not pass it on. The router,
// last, hands what is left to the lines. Agent mode's polls enter at the
// cache, discovery at the offline rule.
func (s *Service) chain(log *slog.Logger, observed bool) request.Handler {
	var mws []request.Middleware
	mws = append(mws, LogTransactions(log)) // one log line per transaction, whoever answered it
	if observed {                           // with metrics.listen
		mws = append(mws,
			s.Metrics.Middleware, // counts and times every transaction
			s.Status.Middleware,  // the status page's feed
		)
	}
	mws = append(mws,
		s.Checks.Middleware,  // what no device can use: 01 or 03 at once
		s.Access.Middleware,  // what [[access]] denies: 01 at once
		s.Limits.Middleware,  // beyond the client's rate: 06 at once
		s.Self.Middleware,    // the gateway's own unit (self_unit): from its state
		s.Cache.Middleware,   // a read of values the line returned lately: from memory
		s.Shared.Middleware,  // the same read already on its way: its answer
		s.Offline.Middleware, // an offline unit: 0x0B at once, but a probe now and then
	)
	return request.Chain(s.Router, mws...)
}
