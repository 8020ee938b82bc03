package main

import (
	"context"
	"flag"
	"io"
	"log/slog"
	"time"

	"github.com/mcpgw/mcpgw/pkg/ops/capture"
	"github.com/mcpgw/mcpgw/pkg/tools/replay"
)

// cmdReplay prints the transactions in a capture, one line each in the
// schema of the gateway's transaction log, then a summary.
func cmdReplay(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("replay", flag.ContinueOnError)
	fs.SetOutput(stderr)
	format := fs.String("format", "text", "text or json")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usageErr("give one capture file: .pcap, .pcapng, mcpgw .txt, or socat -x -v output")
	}
	recs, err := capture.ReadFile(fs.Arg(0))
	if err != nil {
		return err
	}
	log, err := newLogger(stdout, "info", *format)
	if err != nil {
		return err
	}
	txs, sum := replay.Analyze(recs)
	h, ctx := log.Handler(), context.Background()
	for _, t := range txs {
		r := slog.NewRecord(t.Time, slog.LevelInfo, "transaction", 0)
		r.AddAttrs(slog.Int("unit", int(t.Unit)), slog.Int("fc", int(t.FC)))
		if t.Addr >= 0 {
			r.AddAttrs(slog.Int("addr", t.Addr), slog.Int("qty", t.Qty))
		}
		if t.Values != "" {
			r.AddAttrs(slog.String("values", t.Values))
		}
		r.AddAttrs(slog.String("outcome", t.Outcome))
		if t.Exception != 0 {
			r.AddAttrs(slog.Int("exception", int(t.Exception)))
		}
		if t.Resp != nil {
			r.AddAttrs(slog.Duration("latency", t.Latency))
		}
		if err := h.Handle(ctx, r); err != nil {
			return err
		}
	}
	r := slog.NewRecord(lastTime(recs), slog.LevelInfo, "summary", 0)
	r.AddAttrs(slog.Int("transactions", sum.Transactions), slog.Int("ok", sum.OK),
		slog.Int("exceptions", sum.Exceptions), slog.Int("unanswered", sum.Unanswered),
		slog.Int("broadcasts", sum.Broadcasts), slog.Int("crc_errors", sum.CRCErrors),
		slog.Int("noise_bytes", sum.NoiseBytes), slog.Int("unexpected_frames", sum.Unexpected))
	if sum.Swapped {
		r.AddAttrs(slog.Bool("directions_swapped", true))
	}
	return h.Handle(ctx, r)
}

func lastTime(recs []capture.Record) (t time.Time) {
	if len(recs) > 0 {
		t = recs[len(recs)-1].Time
	}
	return t
}
