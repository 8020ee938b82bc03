package poller

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mcpgw/mcpgw/pkg/pdu"
	"github.com/mcpgw/mcpgw/pkg/request"
)

// line records when each poll reached it and fails unit 9's.
type line struct {
	mu   sync.Mutex
	seen map[byte][]time.Time
}

func (l *line) Refresh(_ context.Context, tr *request.Request, dst []byte, keep time.Duration) []byte {
	l.mu.Lock()
	l.seen[tr.Unit] = append(l.seen[tr.Unit], time.Now())
	l.mu.Unlock()
	if !tr.Background || keep != 300*time.Millisecond {
		panic("a poll that is not background, or without its keep")
	}
	if tr.Unit == 9 {
		tr.Outcome = request.Timeout
		return pdu.AppendException(dst, tr.PDU[0], pdu.GatewayTargetNoResponse)
	}
	return append(dst, tr.PDU[0], 2, 0, 1)
}

func TestPollsSpreadAndCounted(t *testing.T) {
	l := &line{seen: make(map[byte][]time.Time)}
	var logs bytes.Buffer
	var mu sync.Mutex
	a := New(l, slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return logs.Write(p)
	}), nil)))
	every := 200 * time.Millisecond
	start := time.Now()
	a.Set([]Poll{
		{Line: "l1", Unit: 1, Function: 3, Count: 10, Interval: every, Keep: 300 * time.Millisecond},
		{Line: "l1", Unit: 2, Function: 3, Count: 10, Interval: every, Keep: 300 * time.Millisecond},
		{Line: "l1", Unit: 9, Function: 1, Count: 8, Interval: every, Keep: 300 * time.Millisecond},
	})
	time.Sleep(1100 * time.Millisecond)
	a.Stop()
	l.mu.Lock()
	defer l.mu.Unlock()
	for u, times := range l.seen {
		if len(times) < 4 || len(times) > 7 {
			t.Errorf("unit %d polled %d times in 1.1 s at 200 ms", u, len(times))
		}
	}
	// Spread: the three first polls at 0, 1/3 and 2/3 of the interval.
	if d := l.seen[2][0].Sub(start); d < every/3-20*time.Millisecond {
		t.Errorf("the second poll fired %v after the start, want about %v", d, every/3)
	}
	if d := l.seen[9][0].Sub(l.seen[2][0]); d < every/3-20*time.Millisecond {
		t.Errorf("the third poll fired %v after the second", d)
	}
	ok, failed := a.LineStats("l1")
	if int(ok) != len(l.seen[1])+len(l.seen[2]) || int(failed) != len(l.seen[9]) {
		t.Errorf("counted %d ok, %d failed", ok, failed)
	}
	mu.Lock()
	defer mu.Unlock()
	if n := strings.Count(logs.String(), "poll failed"); n != 1 {
		t.Errorf("a failing poll logged %d times, want once:\n%s", n, logs.String())
	}
	// Stopped: nothing more.
	n := len(l.seen[1])
	l.mu.Unlock()
	time.Sleep(300 * time.Millisecond)
	l.mu.Lock()
	if len(l.seen[1]) != n {
		t.Error("polls went on after Stop")
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
