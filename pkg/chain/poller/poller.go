// Package poller is agent mode: the gateway polls configured blocks
// itself ([[bus.poll]]) and keeps the cache warm, so that masters' reads
// of those blocks are answered from memory without waiting for the line.
// Polls take their turn in the line's queue after every client's request
// (request.Request.Background), are spread over their interval so they do
// not all fire at once, and go through the offline rule like any read,
// so a dead unit is not polled more than its probes.
package poller

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mcpgw/mcpgw/pkg/pdu"
	"github.com/mcpgw/mcpgw/pkg/request"
	"github.com/mcpgw/mcpgw/pkg/trace"
)

// Poll is one block to keep warm.
type Poll struct {
	Line     string
	Unit     byte
	Function byte // 1, 2, 3 or 4
	Address  uint16
	Count    uint16
	Interval time.Duration
	// Keep is how long after its answer came back the block's values
	// answer reads: the interval (see pkg/gateway).
	Keep time.Duration
}

// Refresher sends a poll to the line and fills the cache with its answer
// (cache.Handler's Refresh).
type Refresher interface {
	Refresh(ctx context.Context, tr *request.Request, dst []byte, keep time.Duration) []byte
}

// Agent runs the polls.
type Agent struct {
	// OnResult, if set, gets each poll's answer (a response PDU: the
	// device's, or an exception) as it comes, and when, from the poll's
	// goroutine: it must not wait (Sparkplug publishing hangs off it).
	// Set it before the first Set.
	OnResult func(p Poll, answer []byte, ok bool, at time.Time)

	cache Refresher
	log   *slog.Logger

	mu     sync.Mutex
	cancel context.CancelFunc
	wg     sync.WaitGroup
	stats  sync.Map // line name → *Stats
}

// Stats count a line's polls.
type Stats struct{ OK, Failed atomic.Uint64 }

// New returns an agent that polls through c.
func New(c Refresher, log *slog.Logger) *Agent {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Agent{cache: c, log: log}
}

// LineStats returns the counters of line's polls (zero if none ran).
func (a *Agent) LineStats(line string) (ok, failed uint64) {
	if s, found := a.stats.Load(line); found {
		st := s.(*Stats)
		return st.OK.Load(), st.Failed.Load()
	}
	return 0, 0
}

// Set stops the polls running (each finishes the transaction it has on
// the line) and starts polls, until Stop. Each line's polls start spread
// over their interval.
func (a *Agent) Set(polls []Poll) {
	a.Stop()
	a.mu.Lock()
	defer a.mu.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	a.cancel = cancel
	perLine := make(map[string]int)
	for _, p := range polls {
		perLine[p.Line]++
	}
	seen := make(map[string]int)
	for _, p := range polls {
		i := seen[p.Line]
		seen[p.Line]++
		offset := p.Interval * time.Duration(i) / time.Duration(perLine[p.Line])
		st, _ := a.stats.LoadOrStore(p.Line, &Stats{})
		a.wg.Go(func() { a.run(ctx, p, offset, st.(*Stats)) })
	}
}

// Stop stops every poll and waits for them.
func (a *Agent) Stop() {
	a.mu.Lock()
	if a.cancel != nil {
		a.cancel()
	}
	a.mu.Unlock()
	a.wg.Wait()
}

// run polls p every interval, the first time after offset. Each poll
// starts early by the time the last one took, so that a fresh answer
// arrives before the last one's values are an interval old. A poll that
// takes longer than the interval delays the next rather than piling up.
func (a *Agent) run(ctx context.Context, p Poll, offset time.Duration, st *Stats) {
	t := time.NewTimer(offset)
	defer t.Stop()
	req := []byte{p.Function, byte(p.Address >> 8), byte(p.Address), byte(p.Count >> 8), byte(p.Count)}
	buf := make([]byte, 0, pdu.MaxSize)
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		start := time.Now()
		tr := &request.Request{Unit: p.Unit, PDU: req, Client: "agent", Trace: trace.Next(), Background: true}
		answer := a.cache.Refresh(ctx, tr, buf[:0], p.Keep)
		outcome, exc := tr.Result(answer)
		ok := outcome == request.OK
		if a.OnResult != nil {
			a.OnResult(p, answer, ok, time.Now())
		}
		if ok {
			st.OK.Add(1)
		} else {
			st.Failed.Add(1)
		}
		attrs := []any{"line", p.Line, "unit", p.Unit, "fc", p.Function, "address", p.Address, "count", p.Count, "trace", tr.Trace}
		switch {
		case !ok && !failing:
			a.log.Warn("poll failed; logged again when it succeeds", append(attrs, "outcome", outcome, "exception", exc)...)
		case ok && failing:
			a.log.Info("poll succeeds again", attrs...)
		}
		failing = !ok
		took := time.Since(start)
		t.Reset(max(0, p.Interval-2*took))
	}
}
