package gateway_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/mcpgw/mcpgw/pkg/chain/access"
	"github.com/mcpgw/mcpgw/pkg/chain/cache"
	"github.com/mcpgw/mcpgw/pkg/chain/coalesce"
	"github.com/mcpgw/mcpgw/pkg/chain/offline"
	"github.com/mcpgw/mcpgw/pkg/chain/ratelimit"
	"github.com/mcpgw/mcpgw/pkg/chain/validate"
	"github.com/mcpgw/mcpgw/pkg/gateway"
	"github.com/mcpgw/mcpgw/pkg/ops/metrics"
	"github.com/mcpgw/mcpgw/pkg/ops/status"
	"github.com/mcpgw/mcpgw/pkg/registers"
	"github.com/mcpgw/mcpgw/pkg/request"
	"github.com/mcpgw/mcpgw/pkg/rtu"
	"github.com/mcpgw/mcpgw/pkg/tcp"
)

// fakePort is a device in memory: each frame written to it is answered
// from a register model, ready for the next Read.
type fakePort struct {
	model *registers.Model
	resp  []byte
	out   []byte
}

func (p *fakePort) Write(b []byte) (int, error) {
	p.resp = p.model.Handle(b[1:len(b)-2], p.resp[:0])
	p.out = rtu.AppendADU(p.out[:0], b[0], p.resp)
	return len(b), nil
}

func (p *fakePort) Read(b []byte) (int, error) {
	n := copy(b, p.out)
	p.out = p.out[:copy(p.out, p.out[n:])]
	return n, nil
}

func (p *fakePort) SetReadTimeout(time.Duration) error { return nil }
func (p *fakePort) ResetInputBuffer() error            { return nil }
func (p *fakePort) Close() error                       { return nil }

// BenchmarkTransaction is the gateway's whole per-request path but the
// sockets and the serial driver: the handler chain (log, metrics, the
// status feed, access, rate limit, checks, cache, shared reads, offline
// rule, router), the line's queue, its owner
// goroutine, framing, CRC, matching, and the answer, to a device in memory.
func BenchmarkTransaction(b *testing.B) {
	for _, tc := range []struct {
		name string
		log  *slog.Logger
	}{
		{"nolog", slog.New(slog.DiscardHandler)},
		{"jsonlog", slog.New(slog.NewJSONHandler(discard{}, nil))},
	} {
		b.Run(tc.name, func(b *testing.B) {
			m := registers.New(1000)
			m.Pattern(1)
			port := &fakePort{model: m, resp: make([]byte, 0, 256), out: make([]byte, 0, 512)}
			bus := rtu.NewBus(rtu.Config{
				Name: "bench", FrameGap: time.Nanosecond, Timeout: time.Second,
				Open: func() (rtu.Port, error) { return port, nil },
			})
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			go bus.Run(ctx)
			for !bus.Up() {
				time.Sleep(time.Millisecond)
			}
			g := gateway.New()
			var routes gateway.Routes
			routes.Add(1, gateway.Route{Line: bus, Retries: -1})
			g.SetRoutes(&routes)
			off := offline.New(tc.log)
			off.SetRule(1, offline.Rule{Line: "bench", After: 3, Probe: 5 * time.Second})
			// The chain of Service, with no access rules and no rate limit,
			// shared reads on and no cache rule for the unit.
			chk, acc, rl, ca, co := validate.New(), access.New(&access.Policy{}), ratelimit.New(0), cache.New(), coalesce.New()
			mx := metrics.New(metrics.Sources{Lines: func() []*rtu.Bus { return []*rtu.Bus{bus} }, Listeners: map[string]*tcp.Server{}}, nil)
			st := status.New(status.Sources{Listeners: map[string]*tcp.Server{}})
			h := request.Chain(g, gateway.LogTransactions(tc.log), mx.Middleware, st.Middleware,
				chk.Middleware, acc.Middleware, rl.Middleware, ca.Middleware, co.Middleware, off.Middleware)

			req := &request.Request{TID: 1, Unit: 1, PDU: []byte{0x03, 0x00, 0x10, 0x00, 0x0A}, Client: "127.0.0.1:50000"}
			dst := make([]byte, 0, tcp.MaxADU)
			b.ReportAllocs()
			for b.Loop() {
				resp := h.ServeModbus(ctx, req, dst[:0])
				if len(resp) != 22 {
					b.Fatalf("answer % X", resp)
				}
			}
		})
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
