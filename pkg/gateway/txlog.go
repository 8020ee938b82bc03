package gateway

import (
	"context"
	"log/slog"

	"github.com/mcpgw/mcpgw/pkg/request"
)

// LogTransactions is the middleware, first in the chain, that logs one
// line per transaction at info (so the default configuration logs every
// one), whichever handler answered it: unit, fc, client, tid, line,
// outcome (the handler's, else ok or exception from the answer), err (a
// failure's detail), exception (the code, when the answer is one), role
// and peer (on a TLS connection: the client's role and its
// certificate's subject), attempts and duration.
func LogTransactions(log *slog.Logger) request.Middleware {
	return func(next request.Handler) request.Handler { return logTransactions(log, next) }
}

func logTransactions(log *slog.Logger, next request.Handler) request.Handler {
	observed := request.Observe(next, func(ctx context.Context, tr *request.Request, d request.Done) {
		outcome, exc := d.Outcome, d.Exception
		attrs := make([]slog.Attr, 0, 13)
		attrs = append(attrs,
			slog.Any("trace", tr.Trace),
			slog.Int("unit", int(tr.Unit)),
			slog.Int("fc", int(tr.PDU[0])),
			slog.String("client", tr.Client),
			slog.Int("tid", int(tr.TID)),
			slog.String("line", tr.Line),
			slog.String("outcome", outcome.String()),
		)
		if tr.Err != nil {
			attrs = append(attrs, slog.String("err", tr.Err.Error()))
		}
		if exc != 0 {
			attrs = append(attrs, slog.Int("exception", int(exc)))
		}
		if tr.Peer != "" { // a Modbus/TCP Security connection
			attrs = append(attrs, slog.String("role", tr.Role), slog.String("peer", tr.Peer))
		}
		attrs = append(attrs, slog.Int("attempts", tr.Attempts), slog.Duration("duration", d.Duration))
		log.LogAttrs(ctx, slog.LevelInfo, "transaction", attrs...)
	})
	return request.HandlerFunc(func(ctx context.Context, tr *request.Request, dst []byte) []byte {
		if !log.Enabled(ctx, slog.LevelInfo) {
			return next.ServeModbus(ctx, tr, dst)
		}
		return observed.ServeModbus(ctx, tr, dst)
	})
}
