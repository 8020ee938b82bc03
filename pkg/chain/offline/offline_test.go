package offline

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mcpgw/mcpgw/pkg/pdu"
	"github.com/mcpgw/mcpgw/pkg/request"
)

// device is the handler behind the rule: it counts what reaches it,
// how much of it as Unknown, and answers as the test says.
type device struct {
	alive    bool
	calls    int
	unknowns int
}

func (d *device) ServeModbus(_ context.Context, tr *request.Request, dst []byte) []byte {
	d.calls++
	if tr.Unknown {
		d.unknowns++
	}
	if !d.alive {
		tr.Outcome = request.Timeout
		return pdu.AppendException(dst, tr.PDU[0], pdu.GatewayTargetNoResponse)
	}
	return append(dst, tr.PDU[0], 2, 0, 1)
}

// TestOfflineAndBack: a unit never heard is found absent by one attempt;
// then it is offline: answered at once, nothing reaches the line but one
// probe every probe interval (no back-off: the line's silence budget
// bounds what probes cost), each Unknown. The first answer puts it
// online, and from then on it takes After failures in a row to go
// offline again.
func TestOfflineAndBack(t *testing.T) {
	dev := &device{}
	var logs bytes.Buffer
	h := New(slog.New(slog.NewTextHandler(&logs, nil)))
	h.Middleware(dev)
	clock := time.Unix(1000, 0)
	h.now = func() time.Time { return clock }
	h.SetRule(2, Rule{Line: "l1", After: 3, Probe: 5 * time.Second})
	ask := func() *request.Request {
		tr := &request.Request{Unit: 2, PDU: []byte{3, 0, 0, 0, 1}}
		h.ServeModbus(context.Background(), tr, nil)
		return tr
	}
	if st, _ := h.State(2); st != Unseen {
		t.Fatalf("state before any request: %v", st)
	}
	if tr := ask(); tr.Outcome != request.Timeout || !tr.Unknown || !h.Offline(2) {
		t.Fatalf("first request to a unit never heard: %q, unknown %v, offline %v", tr.Outcome, tr.Unknown, h.Offline(2))
	}
	if st, since := h.State(2); st != Offline || !since.Equal(clock) {
		t.Fatalf("state %v since %v", st, since)
	}
	// Offline: answered at once, nothing reaches the line.
	for range 100 {
		if tr := ask(); tr.Outcome != request.Offline || tr.Line != "l1" {
			t.Fatalf("while offline: %q on %q", tr.Outcome, tr.Line)
		}
	}
	if dev.calls != 1 {
		t.Fatalf("the line saw %d requests, want 1", dev.calls)
	}
	// Probes: every 5 s, one attempt each (Unknown).
	for range 4 {
		clock = clock.Add(5*time.Second - time.Millisecond)
		if ask().Outcome != request.Offline {
			t.Fatal("probed before the interval")
		}
		clock = clock.Add(time.Millisecond)
		calls := dev.calls
		if tr := ask(); tr.Outcome != request.Timeout || !tr.Unknown || dev.calls != calls+1 {
			t.Fatalf("no probe after 5 s: %q", tr.Outcome)
		}
	}
	// The device comes back: the next probe's answer puts it online.
	dev.alive = true
	clock = clock.Add(5 * time.Second)
	if tr := ask(); tr.Outcome != request.Pending || h.Offline(2) {
		t.Fatalf("probe to a live device: %q, offline %v", tr.Outcome, h.Offline(2))
	}
	if st, _ := h.State(2); st != Online {
		t.Fatalf("state after an answer: %v", st)
	}
	// Online, it keeps offline_after: two failures leave it online, the
	// third takes it offline; its requests are not Unknown.
	dev.alive = false
	for i := range 3 {
		if tr := ask(); tr.Outcome != request.Timeout || tr.Unknown || h.Offline(2) != (i == 2) {
			t.Fatalf("failure %d of a unit that answered: %q, unknown %v, offline %v", i+1, tr.Outcome, tr.Unknown, h.Offline(2))
		}
	}
	if s := h.Stats(); s.WentOffline != 2 || s.CameBack != 1 || s.Answered != 104 {
		t.Fatalf("stats %+v", s)
	}
	log := logs.String()
	if strings.Count(log, "unit not found") != 1 || strings.Count(log, "unit offline") != 1 || strings.Count(log, "unit back online") != 1 || !strings.Contains(log, "unit=2 line=l1") {
		t.Fatalf("want each transition logged once, with unit and line:\n%s", log)
	}
}

// TestOneFindsOutForAll: requests to a unit never heard that arrive while
// one of them is finding out wait for what it finds, and then go out as
// any request to a unit that answers, or get 0x0B at once.
func TestOneFindsOutForAll(t *testing.T) {
	for _, alive := range []bool{true, false} {
		release := make(chan struct{})
		var calls, unknowns atomic.Int32
		h := New(nil)
		h.Middleware(request.HandlerFunc(func(_ context.Context, tr *request.Request, dst []byte) []byte {
			calls.Add(1)
			if tr.Unknown {
				unknowns.Add(1)
				<-release
			}
			if !alive {
				tr.Outcome = request.Timeout
				return pdu.AppendException(dst, tr.PDU[0], pdu.GatewayTargetNoResponse)
			}
			return append(dst, tr.PDU[0], 2, 0, 1)
		}))
		h.SetRule(1, Rule{Line: "l1", After: 3, Probe: time.Hour})
		outcomes := make(chan request.Outcome, 5)
		for range 5 {
			go func() {
				tr := &request.Request{Unit: 1, PDU: []byte{3, 0, 0, 0, 1}}
				h.ServeModbus(context.Background(), tr, nil)
				outcomes <- tr.Outcome
			}()
		}
		for unknowns.Load() == 0 {
			time.Sleep(time.Millisecond)
		}
		time.Sleep(20 * time.Millisecond) // the others arrive, and wait
		if n := calls.Load(); n != 1 {
			t.Fatalf("alive %v: %d requests reached the line while one found out", alive, n)
		}
		close(release)
		got := map[request.Outcome]int{}
		for range 5 {
			got[<-outcomes]++
		}
		want := map[request.Outcome]int{request.Pending: 5}
		if !alive {
			want = map[request.Outcome]int{request.Timeout: 1, request.Offline: 4}
		}
		if fmt.Sprint(got) != fmt.Sprint(want) || unknowns.Load() != 1 {
			t.Fatalf("alive %v: outcomes %v, want %v; %d Unknown", alive, got, want, unknowns.Load())
		}
	}
}

// TestBudgetAndBrokenAnswers: a request the line's silence budget had no
// room for changes nothing (the next one finds out again); a broken
// answer is a device there, not an absent one.
func TestBudgetAndBrokenAnswers(t *testing.T) {
	outcome, heard := request.OverBudget, error(nil)
	h := New(nil)
	h.Middleware(request.HandlerFunc(func(_ context.Context, tr *request.Request, dst []byte) []byte {
		tr.Outcome, tr.Err = outcome, heard
		return pdu.AppendException(dst, tr.PDU[0], pdu.GatewayTargetNoResponse)
	}))
	h.SetRule(1, Rule{Line: "l1", After: 2, Probe: time.Hour})
	ask := func() *request.Request {
		tr := &request.Request{Unit: 1, PDU: []byte{3, 0, 0, 0, 1}}
		h.ServeModbus(context.Background(), tr, nil)
		return tr
	}
	for range 3 {
		if tr := ask(); !tr.Unknown {
			t.Fatal("a unit never heard: not Unknown")
		}
	}
	if st, _ := h.State(1); st != Unseen {
		t.Fatalf("after refusals: %v", st)
	}
	outcome, heard = request.Timeout, errors.New("rtu: bad CRC")
	ask()
	if st, _ := h.State(1); st != Online {
		t.Fatalf("after a broken answer: %v, want online (a device is there)", st)
	}
	if tr := ask(); tr.Unknown || !h.Offline(1) {
		t.Fatalf("second failure of a unit that is there: unknown %v, offline %v", tr.Unknown, h.Offline(1))
	}
}

func TestNoRuleOrZeroPassesEverything(t *testing.T) {
	dev := &device{}
	h := New(nil)
	h.Middleware(dev)
	h.SetRule(1, Rule{After: 0})
	for _, u := range []byte{1, 3} {
		for range 10 {
			h.ServeModbus(context.Background(), &request.Request{Unit: u, PDU: []byte{3, 0, 0, 0, 1}}, nil)
		}
	}
	if dev.calls != 20 || h.Offline(1) || h.Offline(3) {
		t.Fatalf("%d of 20 reached the line", dev.calls)
	}
}

// Outcomes that say nothing of the device (line down, queue full) neither
// count as failures nor as answers.
func TestOtherOutcomesChangeNothing(t *testing.T) {
	h := New(nil)
	h.Middleware(request.HandlerFunc(func(_ context.Context, tr *request.Request, dst []byte) []byte {
		tr.Outcome = request.LineDown
		return pdu.AppendException(dst, tr.PDU[0], pdu.GatewayPathUnavailable)
	}))
	h.SetRule(1, Rule{After: 1, Probe: time.Second})
	for range 5 {
		h.ServeModbus(context.Background(), &request.Request{Unit: 1, PDU: []byte{3, 0, 0, 0, 1}}, nil)
	}
	if h.Offline(1) {
		t.Fatal("a line that is down made its unit offline")
	}
}

// TestSetRulesKeepsState: a reload that leaves a unit on its line keeps
// it offline; moving it to another line or dropping its rule forgets it.
func TestSetRulesKeepsState(t *testing.T) {
	h := New(nil)
	h.Middleware(&device{})
	rule := Rule{Line: "l1", After: 1, Probe: time.Hour}
	h.SetRules(map[byte]Rule{1: rule, 2: rule, 3: rule})
	for u := range byte(3) {
		h.ServeModbus(context.Background(), &request.Request{Unit: u + 1, PDU: []byte{3, 0, 0, 0, 1}}, nil)
	}
	if !h.Offline(1) || !h.Offline(2) || !h.Offline(3) {
		t.Fatal("one failure at offline_after = 1 left a unit online")
	}
	moved := rule
	moved.Line = "l2"
	h.SetRules(map[byte]Rule{1: rule, 2: moved})
	if !h.Offline(1) || h.Offline(2) || h.Offline(3) {
		t.Fatalf("after the reload: offline 1 %v (kept), 2 %v (moved), 3 %v (removed)", h.Offline(1), h.Offline(2), h.Offline(3))
	}
	if s := h.LineStats("l1"); s.WentOffline != 3 || h.LineStats("l2").WentOffline != 0 {
		t.Fatalf("line counters %+v", s)
	}
}

// queued is the line behind the rule, with a dead device: a request
// waits for its turn until hold lets it go (if it reads address 99), and
// its Skip is asked then, as the serial line does.
type queued struct {
	hold  chan struct{}
	calls atomic.Int32
}

func (q *queued) ServeModbus(_ context.Context, tr *request.Request, dst []byte) []byte {
	q.calls.Add(1)
	if tr.PDU[2] == 99 {
		<-q.hold
	}
	if tr.Skip != nil && tr.Skip() {
		tr.Outcome = request.Skipped
	} else {
		tr.Outcome = request.Timeout
	}
	return pdu.AppendException(dst, tr.PDU[0], pdu.GatewayTargetNoResponse)
}

// TestQueuedWhileGoingOffline: a request that was admitted while its unit
// was online, and whose turn on the line comes once the unit is offline,
// is not sent: the line skips it, and the rule answers it as the offline
// unit's, counted so, without counting it as a failure. The probe is
// never skipped.
func TestQueuedWhileGoingOffline(t *testing.T) {
	line := &queued{hold: make(chan struct{})}
	h := New(nil)
	h.Middleware(line)
	clock := time.Unix(1000, 0)
	h.now = func() time.Time { return clock }
	h.SetRule(2, Rule{Line: "l1", After: 2, Probe: 5 * time.Second})
	h.units[2].seen = true // it has answered before
	ask := func(addr byte) *request.Request {
		tr := &request.Request{Unit: 2, PDU: []byte{3, 0, addr, 0, 1}}
		if out := h.ServeModbus(context.Background(), tr, nil); !bytes.Equal(out, []byte{0x83, 0x0B}) {
			t.Errorf("answer % X, want 83 0B", out)
		}
		return tr
	}
	// One request waits in the queue while two others fail.
	waited := make(chan *request.Request)
	go func() { waited <- ask(99) }()
	for line.calls.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	ask(1)
	ask(2)
	if !h.Offline(2) {
		t.Fatal("not offline after two failures")
	}
	close(line.hold)
	tr := <-waited
	if tr.Outcome != request.Offline || tr.Line != "l1" || h.Stats().Answered != 1 || h.Stats().WentOffline != 1 {
		t.Fatalf("the request that waited: %q on %q; stats %+v", tr.Outcome, tr.Line, h.Stats())
	}
	// The probe, after 5 s, goes out unskippable.
	clock = clock.Add(5 * time.Second)
	if probe := ask(3); probe.Skip != nil || probe.Outcome != request.Timeout {
		t.Fatalf("the probe: Skip set %v, outcome %q", probe.Skip != nil, probe.Outcome)
	}
	// Online, a request's Skip says no.
	h.units[2] = unit{seen: true}
	if tr := ask(4); tr.Skip == nil || tr.Outcome != request.Timeout {
		t.Fatalf("online: Skip set %v, outcome %q", tr.Skip != nil, tr.Outcome)
	}
}
