package gateway

import (
	"context"
	"log/slog"
	"time"

	"github.com/mcpgw/mcpgw/pkg/pdu"
	"github.com/mcpgw/mcpgw/pkg/tcp"
)

// LogTransactions wraps next, first in the chain, and logs one line per
// transaction at info (so the default configuration logs every one),
// whichever handler answered it: unit, fc, client, tid, line, outcome
// (the handler's, else "ok" or "exception" from the answer), exception
// (the code, when the answer is one), role and peer (on a TLS
// connection: the client's role and its certificate's subject), attempts
// and duration.
func LogTransactions(log *slog.Logger, next tcp.Handler) tcp.Handler {
	return tcp.HandlerFunc(func(ctx context.Context, tr *tcp.Request, dst []byte) []byte {
		if !log.Enabled(ctx, slog.LevelInfo) {
			return next.ServeModbus(ctx, tr, dst)
		}
		start := time.Now()
		n := len(dst)
		out := next.ServeModbus(ctx, tr, dst)
		outcome := tr.Outcome
		exc, isExc := pdu.Exception(0), false
		if out != nil {
			exc, isExc = pdu.IsException(out[n:])
		}
		if outcome == "" {
			outcome = "ok"
			if isExc {
				outcome = "exception"
			}
		}
		attrs := make([]slog.Attr, 0, 12)
		attrs = append(attrs,
			slog.Int("unit", int(tr.Unit)),
			slog.Int("fc", int(tr.PDU[0])),
			slog.String("client", tr.Client),
			slog.Int("tid", int(tr.TID)),
			slog.String("line", tr.Line),
			slog.String("outcome", outcome),
		)
		if isExc {
			attrs = append(attrs, slog.Int("exception", int(exc)))
		}
		if tr.Peer != "" { // a Modbus/TCP Security connection
			attrs = append(attrs, slog.String("role", tr.Role), slog.String("peer", tr.Peer))
		}
		attrs = append(attrs, slog.Int("attempts", tr.Attempts), slog.Duration("duration", time.Since(start)))
		log.LogAttrs(ctx, slog.LevelInfo, "transaction", attrs...)
		return out
	})
}
