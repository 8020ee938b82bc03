package sparkplug

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/mcpgw/mcpgw/pkg/chain/poller"
	"github.com/mcpgw/mcpgw/pkg/north/sparkplug/sproto"
	"github.com/mcpgw/mcpgw/pkg/request"
	"github.com/mcpgw/mcpgw/pkg/tag"
)

// node is an edge node for one unit's poll of two registers, never
// connected: what it would publish stays in its queue.
func node(t *testing.T, buffer int, offline *bool) *Node {
	t.Helper()
	blocks := []Block{{Device: "l1-unit1", Unit: 1, Function: 3, Count: 2, Tags: []tag.Tag{
		{Name: "a", Type: tag.Uint16, Writable: true},
		{Name: "b", Offset: 1, Type: tag.Int16, Deadband: 5},
	}}}
	return New(Config{Buffer: buffer}, blocks, nil, func(byte) bool { return *offline }, slog.New(slog.DiscardHandler))
}

var poll = poller.Poll{Unit: 1, Function: 3, Count: 2}

func answer(a, b uint16) []byte { return []byte{3, 4, byte(a >> 8), byte(a), byte(b >> 8), byte(b)} }

// TestBufferWhileAway: while the broker is away only data is kept,
// flagged historical, the oldest dropped past the buffer and counted;
// births and deaths wait for the next session's births.
func TestBufferWhileAway(t *testing.T) {
	off := false
	n := node(t, 3, &off)
	now := time.Now()
	n.Polled(poll, answer(1, 0), true, now) // born: a DBIRTH, not kept while away
	if len(n.queue) != 0 || !n.devices[0].alive {
		t.Fatalf("birth while away: queue %d, alive %v", len(n.queue), n.devices[0].alive)
	}
	for i := range 5 {
		n.Polled(poll, answer(uint16(2+i), 0), true, now)
	}
	if len(n.queue) != 3 || n.Stats.Dropped.Load() != 2 {
		t.Fatalf("queue %d, dropped %d; want 3 and 2", len(n.queue), n.Stats.Dropped.Load())
	}
	for i, e := range n.queue {
		m := e.metrics[0]
		if e.kind != ddata || !m.GetIsHistorical() || m.GetIntValue() != uint32(4+i) || len(e.metrics) != 1 {
			t.Fatalf("kept %d: %+v", i, e)
		}
	}
}

// TestChangesDeathsAndBirths: data only for what changed (b within its
// deadband does not), death only once the unit is offline, birth when it
// answers again.
func TestChangesDeathsAndBirths(t *testing.T) {
	off := false
	n := node(t, 100, &off)
	n.connected = true
	now := time.Now()
	n.Polled(poll, answer(1, 10), true, now)
	n.Polled(poll, answer(1, 14), true, now) // b moved 4: within its deadband
	n.Polled(poll, answer(2, 16), true, now) // a changed, b moved 6
	n.Polled(poll, nil, false, now)          // failed, unit not yet offline
	off = true
	n.Polled(poll, nil, false, now) // offline: dead
	n.Polled(poll, nil, false, now) // still dead: nothing more
	off = false
	n.Polled(poll, answer(2, 16), true, now) // back: born, unchanged values
	var kinds []kind
	for _, e := range n.queue {
		kinds = append(kinds, e.kind)
	}
	want := []kind{dbirth, ddata, ddeath, dbirth}
	if len(kinds) != len(want) {
		t.Fatalf("events %v, want %v", kinds, want)
	}
	for i := range want {
		if kinds[i] != want[i] {
			t.Fatalf("events %v, want %v", kinds, want)
		}
	}
	if d := n.queue[1]; len(d.metrics) != 2 || d.metrics[1].GetIntValue() != 16 {
		t.Fatalf("DDATA %+v: want a and b", d.metrics)
	}
	if b := n.queue[3]; len(b.metrics) != 2 || b.metrics[0].GetName() != "a" || b.metrics[0].GetDatatype() == 0 {
		t.Fatalf("DBIRTH %+v: want every value by name, with its datatype", b.metrics)
	}
}

// TestWritesAreTheirOwn: a DCMD write enters the chain as the node
// itself (role "sparkplug", no network address), not as a local client,
// so the access rules and the rate limit see it as itself.
func TestWritesAreTheirOwn(t *testing.T) {
	off := false
	n := node(t, 10, &off)
	var got *request.Request
	n.chain = request.HandlerFunc(func(_ context.Context, tr *request.Request, dst []byte) []byte {
		got = tr
		return append(dst, tr.PDU...)
	})
	d := n.byID["l1-unit1"]
	if d == nil {
		t.Fatalf("devices: %v", n.byID)
	}
	name := "a"
	v, dt := uint32(77), uint32(6) // UInt16
	n.write(d, &sproto.Payload_Metric{Name: &name, Datatype: &dt, Value: &sproto.Payload_Metric_IntValue{IntValue: v}})
	if got == nil {
		t.Fatal("no write reached the chain")
	}
	if got.Role != Role || got.Client != Role || got.Addr.IsValid() || got.Addr.Addr().IsValid() {
		t.Fatalf("the write came as role %q, client %q, from %v", got.Role, got.Client, got.Addr)
	}
	if want := []byte{0x06, 0, 0, 0, 77}; string(got.PDU) != string(want) {
		t.Fatalf("PDU % X, want % X", got.PDU, want)
	}
}
