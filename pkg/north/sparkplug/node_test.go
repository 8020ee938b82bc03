package sparkplug

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/mcpgw/mcpgw/pkg/chain/poller"
	"github.com/mcpgw/mcpgw/pkg/north/sparkplug/sproto"
	"github.com/mcpgw/mcpgw/pkg/north/spool"
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

// out is a message next() made ready.
type out struct {
	topic string
	p     *sproto.Payload
}

// drain takes everything queued, as flush would publish it.
func drain(t *testing.T, n *Node) []out {
	t.Helper()
	n.mu.Lock()
	defer n.mu.Unlock()
	var outs []out
	for {
		id, topic, body, ok, err := n.next()
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			return outs
		}
		if body != nil {
			o := out{topic: topic, p: &sproto.Payload{}}
			if err := proto.Unmarshal(body, o.p); err != nil {
				t.Fatal(err)
			}
			outs = append(outs, o)
		}
		n.queue.Ack(id)
	}
}

// born is what births() does to the queue: the session begins.
func born(n *Node) {
	n.mu.Lock()
	n.barrier, n.connected = n.queue.Next(), true
	n.mu.Unlock()
}

// TestBufferWhileAway: while the broker is away only data is kept (the
// first values too), the oldest dropped past the buffer and counted;
// after the births it goes out flagged historical, by alias.
func TestBufferWhileAway(t *testing.T) {
	off := false
	n := node(t, 3, &off)
	now := time.Now()
	n.Polled(poll, answer(1, 0), true, now) // born while away: its values are data
	if !n.devices[0].alive {
		t.Fatal("a device that answered is not alive")
	}
	for i := range 5 {
		n.Polled(poll, answer(uint16(2+i), 0), true, now)
	}
	if n.Stats.Dropped.Load() != 3 {
		t.Fatalf("dropped %d, want 3", n.Stats.Dropped.Load())
	}
	born(n)
	outs := drain(t, n)
	if len(outs) != 3 {
		t.Fatalf("%d messages, want 3", len(outs))
	}
	for i, o := range outs {
		m := o.p.Metrics[0]
		if o.topic != "spBv1.0//DDATA//l1-unit1" || !m.GetIsHistorical() || m.GetIntValue() != uint32(4+i) ||
			len(o.p.Metrics) != 1 || m.Name != nil || m.GetAlias() != 1 || o.p.GetSeq() != uint64(i) {
			t.Fatalf("kept %d: %s %+v", i, o.topic, o.p)
		}
	}
}

// TestChangesDeathsAndBirths: data only for what changed (b within its
// deadband does not), death only once the unit is offline, birth when it
// answers again; nothing of it historical in a session.
func TestChangesDeathsAndBirths(t *testing.T) {
	off := false
	n := node(t, 100, &off)
	born(n)
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
	outs := drain(t, n)
	want := []string{"DBIRTH", "DDATA", "DDEATH", "DBIRTH"}
	if len(outs) != len(want) {
		t.Fatalf("%d messages (%v), want %v", len(outs), outs, want)
	}
	for i, k := range want {
		if outs[i].topic != "spBv1.0//"+k+"//l1-unit1" {
			t.Fatalf("message %d: %s, want %s", i, outs[i].topic, k)
		}
	}
	if d := outs[1].p.Metrics; len(d) != 2 || d[1].GetIntValue() != 16 || d[0].GetIsHistorical() || d[0].Name != nil {
		t.Fatalf("DDATA %+v: want a and b by alias", d)
	}
	if b := outs[3].p.Metrics; len(b) != 2 || b[0].GetName() != "a" || b[0].GetAlias() != 1 || b[0].GetDatatype() == 0 {
		t.Fatalf("DBIRTH %+v: want every value by name and alias, with its datatype", b)
	}
}

// TestStoreAcrossRestart: values queued on disk while the broker is away
// outlive the node, and after a restart with a changed configuration
// (a value added before them) go out under the new aliases, historical;
// a value no longer configured is left out.
func TestStoreAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	off := false
	mk := func(tags []tag.Tag) *Node {
		q, err := spool.Open(dir, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		blocks := []Block{{Device: "l1-unit1", Unit: 1, Function: 3, Count: 3, Tags: tags}}
		return New(Config{Queue: q}, blocks, nil, func(byte) bool { return off }, slog.New(slog.DiscardHandler))
	}
	p3 := poller.Poll{Unit: 1, Function: 3, Count: 3}
	a3 := func(a, b, c uint16) []byte {
		return []byte{3, 6, byte(a >> 8), byte(a), byte(b >> 8), byte(b), byte(c >> 8), byte(c)}
	}
	n := mk([]tag.Tag{{Name: "a", Type: tag.Uint16}, {Name: "gone", Offset: 1, Type: tag.Uint16}})
	for i := range 4 {
		n.Polled(p3, a3(uint16(10+i), uint16(i), 0), true, time.Now())
	}
	n.Stop()
	n = mk([]tag.Tag{{Name: "new", Offset: 2, Type: tag.Uint16}, {Name: "a", Type: tag.Uint16}})
	defer n.Stop()
	n.Polled(p3, a3(13, 3, 0), true, time.Now()) // a as last kept: not again
	n.Polled(p3, a3(20, 0, 5), true, time.Now())
	born(n)
	outs := drain(t, n)
	if len(outs) != 6 {
		t.Fatalf("%d messages, want the 4 from before the restart and 2 after", len(outs))
	}
	if m := outs[4].p.Metrics; len(m) != 1 || m[0].GetAlias() != 1 {
		t.Fatalf("the first poll after the restart sent %+v; want only the new value (a is as it was kept)", m)
	}
	for i, o := range outs[:4] {
		m := o.p.Metrics
		if len(m) != 1 || m[0].GetAlias() != 2 || m[0].GetIntValue() != uint32(10+i) || !m[0].GetIsHistorical() {
			t.Fatalf("message %d after the restart: %+v; want a (now alias 2) = %d, historical", i, m, 10+i)
		}
	}
	if m := outs[5].p.Metrics; len(m) != 2 || m[0].GetAlias() != 1 || m[0].GetIntValue() != 5 || m[1].GetIntValue() != 20 {
		t.Fatalf("the first values after the restart: %+v", m)
	}
	if outs := drain(t, n); len(outs) != 0 {
		t.Fatalf("%d messages again", len(outs))
	}
}

// TestPrimaryHostState: Sparkplug 3.0 STATE: online counts, an offline
// not older than the last online counts, an older (stale) one does
// not; 2.2's plain ONLINE/OFFLINE with legacy_state; junk is ignored.
func TestPrimaryHostState(t *testing.T) {
	n := New(Config{PrimaryHost: "scada1", LegacyState: true}, nil, nil, nil, slog.New(slog.DiscardHandler))
	for _, step := range []struct {
		topic, payload string
		online         bool
	}{
		{"spBv1.0/STATE/scada1", `{"online": true, "timestamp": 1000}`, true},
		{"spBv1.0/STATE/scada1", `{"online": false, "timestamp": 999}`, true},   // stale: ignored
		{"spBv1.0/STATE/scada1", `{"online": false, "timestamp": 1000}`, false}, // the host's will
		{"spBv1.0/STATE/scada1", `{"online": true, "timestamp": 900}`, false},   // an old online: ignored
		{"spBv1.0/STATE/scada1", `{"online": true, "timestamp": 2000}`, true},
		{"spBv1.0/STATE/scada1", `not json`, true},
		{"spBv1.0/STATE/scada1", `{"online": false}`, true}, // no timestamp: ignored
		{"STATE/scada1", `OFFLINE`, false},
		{"STATE/scada1", `maybe`, false},
		{"STATE/scada1", `ONLINE`, true},
	} {
		n.state(step.topic, []byte(step.payload))
		if got := n.hostOnline(); got != step.online {
			t.Fatalf("after %s %s: online %v, want %v", step.topic, step.payload, got, step.online)
		}
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
