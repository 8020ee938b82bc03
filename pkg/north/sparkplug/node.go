// Package sparkplug is an MQTT Sparkplug B edge node: it publishes the
// values agent mode polls ([[bus.poll]] with [[bus.poll.value]]) to a
// broker as Sparkplug devices, one per unit, and turns the commands it
// receives back into Modbus writes through the gateway's chain of
// handlers, like a TCP client's.
//
// The session follows the Sparkplug B 3.0 specification: NDEATH (with
// bdSeq) registered as the MQTT will; NCMD and DCMD subscribed before
// anything is published; NBIRTH (seq 0, bdSeq, Node Control/Rebirth),
// then a DBIRTH per live device with every metric's name, alias,
// datatype and value; DDATA with the metrics that changed, by alias;
// seq 0..255 on every message; DDEATH when the offline rule marks a
// device's unit offline, DBIRTH when it answers again; a rebirth on
// Node Control/Rebirth. While the broker is away the serial side goes
// on: DDATA wait in a Queue (in memory, or on disk across restarts; the
// oldest dropped first past its size, counted) and are published,
// flagged historical, after the births of the next session, which has a
// fresh bdSeq.
//
// Given several brokers, the node holds a session with one at a time and
// moves to the next when it fails. Given a primary host, it publishes
// its births only once that host's STATE says it is online, and ends the
// session (NDEATH, disconnect, the next broker) when it says offline.
package sparkplug

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"google.golang.org/protobuf/proto"

	"github.com/mcpgw/mcpgw/pkg/chain/cache"
	"github.com/mcpgw/mcpgw/pkg/chain/poller"
	"github.com/mcpgw/mcpgw/pkg/north/sparkplug/sproto"
	"github.com/mcpgw/mcpgw/pkg/pdu"
	"github.com/mcpgw/mcpgw/pkg/request"
	"github.com/mcpgw/mcpgw/pkg/tag"
	"github.com/mcpgw/mcpgw/pkg/trace"
)

// Namespace is the Sparkplug B topic namespace.
const Namespace = "spBv1.0"

// Rebirth is the node control metric a host sets to ask for births.
const Rebirth = "Node Control/Rebirth"

// Device is one unit's published values.
type Device struct {
	ID      string
	Unit    byte
	metrics []*metric
	byName  map[string]*metric
	alive   bool // born in this session's terms: its last poll answered
	polled  bool // a poll of it has ended, answered or not
}

type metric struct {
	conf  tag.Tag
	alias uint64
	dtype sproto.DataType
	last  tag.Value // the value last read (nil: none yet)
	at    time.Time
}

// pollKey names a poll: a unit's block.
type pollKey struct {
	unit, function byte
	address, count uint16
}

// kind of message waiting to go out.
type kind int

const (
	dbirth kind = iota
	ddata
	ddeath
)

// event is a message waiting to go out: its metrics are a snapshot, by
// name (queued, see encode), by alias once resolved for publishing.
type event struct {
	kind    kind
	dev     string // the device's id
	metrics []*sproto.Payload_Metric
}

// Stats count the node's work.
type Stats struct {
	Published    atomic.Uint64 // messages published
	Dropped      atomic.Uint64 // queued messages dropped, the buffer or store full
	Sessions     atomic.Uint64 // MQTT sessions begun (births published)
	WritesOK     atomic.Uint64 // DCMD writes the device took
	WritesFailed atomic.Uint64 // DCMD writes refused or failed, not writable values among them
}

// Node is the edge node.
type Node struct {
	Stats Stats

	cfg     Config
	chain   request.Handler
	offline func(unit byte) bool
	log     *slog.Logger

	devices []*Device
	byID    map[string]*Device
	byPoll  map[pollKey][]*metric
	devOf   map[pollKey]*Device

	mu        sync.Mutex // guards the devices' state, the queue, connected, barrier and host
	queue     Queue
	connected bool   // births published in this session
	barrier   uint64 // the queue's first id after this session's births
	dropping  bool   // messages are being dropped, the queue full: said once
	dropSeen  uint64 // the queue's drops already counted in Stats.Dropped
	unpolled  int    // devices no poll of which has ended yet
	ready     chan struct{}
	host      hostState
	hostCh    chan struct{} // the primary host's state changed
	wake      chan struct{}
	rebirth   chan struct{}
	bdSeq     uint64
	seq       uint8 // the next message's; guarded by mu
	cancel    context.CancelFunc
	done      chan struct{}
}

// hostState is what the primary host last said of itself.
type hostState struct {
	online bool
	ts     int64 // the timestamp of its last accepted STATE (Sparkplug 3.0)
}

// Config is the node's session: the brokers, who it is there, whom it
// waits for, and where it keeps messages while the broker is away.
type Config struct {
	Brokers            []string    // tcp://host:1883 or ssl://host:8883, tried in turn
	TLS                *tls.Config // for ssl://
	ClientID           string
	Group, Node        string // Sparkplug group and edge node ids
	Username, Password string
	PrimaryHost        string        // the host id whose STATE gates the births; empty: none
	LegacyState        bool          // follow Sparkplug 2.2's STATE/<host> (ONLINE, OFFLINE) too
	Queue              Queue         // where messages wait; nil: in memory, Buffer of them
	Buffer             int           // messages kept in memory, oldest dropped first
	FirstPollWait      time.Duration // the longest the first births wait for every device's first poll: default 10 s
	BdSeqFile          string        // where the last session's bdSeq is kept, so that the next one, after a restart too, is one more; empty: from 0 at each start
}

// Block is a polled block of registers with named values in it: the
// values of Device, unit Unit.
type Block struct {
	Device         string
	Unit, Function byte
	Address, Count uint16
	Tags           []tag.Tag
}

// New makes a node publishing blocks' values. chain answers its writes
// (the gateway's whole chain, so they are checked, queued and logged
// like a client's); offline reports whether the offline rule holds a
// unit offline.
func New(cfg Config, blocks []Block, chain request.Handler, offline func(unit byte) bool, log *slog.Logger) *Node {
	n := &Node{cfg: cfg, chain: chain, offline: offline, log: log, queue: cfg.Queue,
		byID: make(map[string]*Device), byPoll: make(map[pollKey][]*metric), devOf: make(map[pollKey]*Device),
		wake: make(chan struct{}, 1), rebirth: make(chan struct{}, 1), hostCh: make(chan struct{}, 1),
		ready: make(chan struct{}), done: make(chan struct{})}
	if n.queue == nil {
		n.queue = NewMemQueue(max(cfg.Buffer, 1))
	}
	if n.cfg.FirstPollWait == 0 {
		n.cfg.FirstPollWait = 10 * time.Second
	}
	if b, err := os.ReadFile(cfg.BdSeqFile); err == nil {
		if last, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 8); err == nil {
			n.bdSeq = (last + 1) % 256
		}
	}
	var alias uint64
	for _, b := range blocks {
		if len(b.Tags) == 0 {
			continue
		}
		d := n.byID[b.Device]
		if d == nil {
			d = &Device{ID: b.Device, Unit: b.Unit, byName: make(map[string]*metric)}
			n.byID[b.Device] = d
			n.devices = append(n.devices, d)
		}
		k := pollKey{b.Unit, b.Function, b.Address, b.Count}
		n.devOf[k] = d
		for _, v := range b.Tags {
			alias++
			mt := &metric{conf: v, alias: alias, dtype: dataType(&v)}
			d.metrics = append(d.metrics, mt)
			d.byName[v.Name] = mt
			n.byPoll[k] = append(n.byPoll[k], mt)
		}
	}
	if n.unpolled = len(n.devices); n.unpolled == 0 {
		close(n.ready)
	}
	n.seed()
	return n
}

// seed takes each value's last value from the messages a store kept
// from before a restart, so that a value read again unchanged is not
// kept twice.
func (n *Node) seed() {
	err := n.queue.Each(func(_ uint64, rec []byte) bool {
		e, err := decode(rec)
		if d := n.byID[e.dev]; err == nil && d != nil && e.kind != ddeath {
			for _, m := range e.metrics {
				if mt := d.byName[m.GetName()]; mt != nil && !m.GetIsNull() {
					if x, err := getValue(m, mt.dtype); err == nil {
						mt.last, mt.at = x, time.UnixMilli(int64(m.GetTimestamp()))
					}
				}
			}
		}
		return true
	})
	if err != nil {
		n.log.Warn("Sparkplug store: reading the last values kept", "err", err)
	}
}

func (n *Node) topic(kind, device string) string {
	t := Namespace + "/" + n.cfg.Group + "/" + kind + "/" + n.cfg.Node
	if device != "" {
		t += "/" + device
	}
	return t
}

// Polled takes a poll's result (poller.Agent.OnResult): the device's
// values that changed go out as DDATA; a device whose poll fails while
// its unit is offline dies (DDEATH); one that answers again is born
// (DBIRTH). It never waits for the broker.
func (n *Node) Polled(p poller.Poll, answer []byte, ok bool, at time.Time) {
	k := pollKey{p.Unit, p.Function, p.Address, p.Count}
	d := n.devOf[k]
	if d == nil {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if !d.polled {
		d.polled = true
		if n.unpolled--; n.unpolled == 0 {
			close(n.ready)
		}
	}
	if !ok {
		if d.alive && n.offline != nil && n.offline(d.Unit) {
			d.alive = false
			n.push(event{kind: ddeath, dev: d.ID})
		}
		return
	}
	next, good := cache.Values(answer, p.Function, p.Count)
	if !good {
		return
	}
	words := make([]uint16, p.Count) // registers, or bits one to a word
	for i := range words {
		words[i] = next()
	}
	var changedMetrics []*sproto.Payload_Metric
	for _, mt := range n.byPoll[k] {
		x := mt.conf.Decode(words)
		if mt.conf.Changed(mt.last, x) {
			mt.last, mt.at = x, at
			m := mt.data()
			m.Name = proto.String(mt.conf.Name)
			changedMetrics = append(changedMetrics, m)
		}
	}
	switch {
	case !d.alive && n.connected:
		d.alive = true
		n.push(event{kind: dbirth, dev: d.ID, metrics: d.birth()})
	case !d.alive:
		// Born while the broker is away: the next session's births say
		// so, and what it read now is history by then, like any data.
		d.alive = true
		n.push(event{kind: ddata, dev: d.ID, metrics: changedMetrics})
	case len(changedMetrics) > 0:
		n.push(event{kind: ddata, dev: d.ID, metrics: changedMetrics})
	}
}

// push queues e (n.mu held): in a session, to go out in order; while
// the broker is away only data is kept (the next session's births say
// who is alive).
func (n *Node) push(e event) {
	if !n.connected && e.kind != ddata || len(e.metrics) == 0 && e.kind != ddeath {
		return
	}
	if err := n.queue.Append(encode(e)); err != nil {
		n.Stats.Dropped.Add(1)
		n.log.Error("Sparkplug message not kept, the store failed", "device", e.dev, "err", err)
		return
	}
	if d := n.queue.Dropped(); d > n.dropSeen {
		n.Stats.Dropped.Add(d - n.dropSeen)
		n.dropSeen = d
		if !n.dropping {
			n.dropping = true
			n.log.Warn("Sparkplug store full: the oldest messages are being dropped until the broker takes them (mqtt.buffer, mqtt.store_max_mb)",
				"dropped", n.Stats.Dropped.Load())
		}
	}
	select {
	case n.wake <- struct{}{}:
	default:
	}
}

// birth is the device's DBIRTH metrics (n.mu held): every value, by name
// and alias, with its datatype.
func (d *Device) birth() []*sproto.Payload_Metric {
	ms := make([]*sproto.Payload_Metric, len(d.metrics))
	for i, mt := range d.metrics {
		m := mt.data()
		m.Name = proto.String(mt.conf.Name)
		m.Datatype = proto.Uint32(uint32(mt.dtype))
		ms[i] = m
	}
	return ms
}

// data is the metric's value by alias, as DDATA carries it.
func (mt *metric) data() *sproto.Payload_Metric {
	m := &sproto.Payload_Metric{Alias: proto.Uint64(mt.alias)}
	if mt.last == nil {
		m.IsNull = proto.Bool(true)
		return m
	}
	m.Timestamp = proto.Uint64(uint64(mt.at.UnixMilli()))
	setValue(m, mt.dtype, mt.last)
	return m
}

// Start runs the node's MQTT sessions until Stop.
func (n *Node) Start() {
	ctx, cancel := context.WithCancel(context.Background())
	n.cancel = cancel
	go func() {
		defer close(n.done)
		n.run(ctx)
	}()
}

// Stop publishes NDEATH (a clean goodbye; the will covers the rest),
// disconnects, and closes the queue.
func (n *Node) Stop() {
	if n.cancel != nil {
		n.cancel()
		<-n.done
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := n.queue.Close(); err != nil {
		n.log.Error("Sparkplug store: closing", "err", err)
	}
}

// run holds one session at a time, with a fresh bdSeq each, until ctx
// ends. A broker that fails (it cannot be reached, or the session ends
// on its own or because the primary host went offline) gives way to the
// next; after a round in which none could be reached it waits (1 s
// doubling to 30 s).
func (n *Node) run(ctx context.Context) {
	backoff := time.Second
	brokers := n.cfg.Brokers
	next, failed := 0, 0 // the broker to try; of them unreachable in a row
	for ctx.Err() == nil {
		broker := brokers[next]
		client, lost, err := n.connect(broker)
		if err != nil {
			n.log.Warn("MQTT broker unreachable; values wait in the store", "broker", broker, "err", err)
			next = (next + 1) % len(brokers)
			if failed++; failed%len(brokers) == 0 {
				select {
				case <-ctx.Done():
					return
				case <-time.After(backoff):
				}
				backoff = min(2*backoff, 30*time.Second)
			}
			continue
		}
		backoff, failed = time.Second, 0
		if n.cfg.BdSeqFile != "" {
			if err := os.WriteFile(n.cfg.BdSeqFile, []byte(strconv.FormatUint(n.bdSeq, 10)+"\n"), 0o600); err != nil {
				n.log.Warn("Sparkplug: the bdSeq could not be kept; after a restart it begins at 0 again", "err", err)
			}
		}
		if n.session(ctx, client, lost, broker) {
			next = (next + 1) % len(brokers)
		}
		n.bdSeq = (n.bdSeq + 1) % 256
	}
}

// payload encodes a Sparkplug payload stamped now, with seq unless it is
// an NDEATH.
func (n *Node) payload(metrics []*sproto.Payload_Metric, withSeq bool) []byte {
	p := &sproto.Payload{Timestamp: proto.Uint64(uint64(time.Now().UnixMilli())), Metrics: metrics}
	if withSeq {
		p.Seq = proto.Uint64(uint64(n.seq))
		n.seq++ // 255 wraps to 0
	}
	b, err := proto.Marshal(p)
	if err != nil {
		panic(fmt.Sprintf("sparkplug: marshal: %v", err)) // a message of our own making
	}
	return b
}

func (n *Node) bdSeqMetric() *sproto.Payload_Metric {
	return &sproto.Payload_Metric{Name: proto.String("bdSeq"), Datatype: proto.Uint32(uint32(sproto.DataType_Int64)),
		Value: &sproto.Payload_Metric_LongValue{LongValue: n.bdSeq}}
}

// stateTopics are the primary host's STATE topics the node follows.
func (n *Node) stateTopics() []string {
	if n.cfg.PrimaryHost == "" {
		return nil
	}
	ts := []string{Namespace + "/STATE/" + n.cfg.PrimaryHost}
	if n.cfg.LegacyState {
		ts = append(ts, "STATE/"+n.cfg.PrimaryHost)
	}
	return ts
}

// connect opens a clean MQTT session with this bdSeq's NDEATH as its
// will (QoS 1, not retained) and subscribes to the node's commands and
// the primary host's STATE, before anything is published.
func (n *Node) connect(broker string) (mqtt.Client, <-chan struct{}, error) {
	lost := make(chan struct{})
	opts := mqtt.NewClientOptions().AddBroker(broker).SetClientID(n.cfg.ClientID).
		SetCleanSession(true).SetAutoReconnect(false).SetConnectRetry(false).
		SetKeepAlive(10*time.Second).SetConnectTimeout(5*time.Second).SetWriteTimeout(5*time.Second).
		SetWill(n.topic("NDEATH", ""), string(n.payload([]*sproto.Payload_Metric{n.bdSeqMetric()}, false)), 1, false).
		SetConnectionLostHandler(func(_ mqtt.Client, err error) {
			n.log.Warn("MQTT connection lost; values wait in the store", "broker", broker, "err", err)
			close(lost)
		})
	if n.cfg.Username != "" {
		opts.SetUsername(n.cfg.Username).SetPassword(n.cfg.Password)
	}
	if n.cfg.TLS != nil {
		opts.SetTLSConfig(n.cfg.TLS)
	}
	c := mqtt.NewClient(opts)
	if t := c.Connect(); !t.WaitTimeout(10*time.Second) || t.Error() != nil {
		return nil, nil, fmt.Errorf("connect: %w", orTimeout(t.Error()))
	}
	subs := map[string]byte{n.topic("NCMD", ""): 1, n.topic("DCMD", "+"): 1}
	for _, t := range n.stateTopics() {
		subs[t] = 1
	}
	if t := c.SubscribeMultiple(subs, n.message); !t.WaitTimeout(10*time.Second) || t.Error() != nil {
		c.Disconnect(0)
		return nil, nil, fmt.Errorf("subscribe: %w", orTimeout(t.Error()))
	}
	return c, lost, nil
}

func orTimeout(err error) error {
	if err == nil {
		return fmt.Errorf("no answer from the broker in 10s")
	}
	return err
}

// session waits until it may publish (every device polled once after
// the start, and the primary host online), publishes the births, then
// whatever is queued, until the connection is lost, the primary host
// goes offline or ctx ends. It reports whether to move to the next
// broker.
func (n *Node) session(ctx context.Context, c mqtt.Client, lost <-chan struct{}, broker string) (moveOn bool) {
	if end, ok := n.await(ctx, c, lost, broker); !ok {
		return end
	}
	if !n.births(c) {
		n.disconnected()
		c.Disconnect(0)
		return true
	}
	n.Stats.Sessions.Add(1)
	n.log.Info("Sparkplug edge node online", "broker", broker, "group", n.cfg.Group, "node", n.cfg.Node,
		"bdSeq", n.bdSeq, "devices", len(n.devices))
	for {
		select {
		case <-ctx.Done():
			n.goodbye(c)
			return false
		case <-lost:
			n.disconnected()
			return true
		case <-n.hostCh:
			if !n.hostOnline() {
				n.log.Warn("Sparkplug primary host offline: NDEATH, and on to the next broker", "host", n.cfg.PrimaryHost, "broker", broker)
				n.goodbye(c)
				return true
			}
		case <-n.rebirth:
			if !n.births(c) {
				n.disconnected()
				c.Disconnect(0)
				return true
			}
		case <-n.wake:
			if !n.flush(c) {
				n.disconnected()
				c.Disconnect(0)
				return true
			}
		}
	}
}

// goodbye ends a session on purpose: NDEATH, then the disconnect.
func (n *Node) goodbye(c mqtt.Client) {
	n.disconnected()
	n.publish(c, n.topic("NDEATH", ""), n.payload([]*sproto.Payload_Metric{n.bdSeqMetric()}, false), 1)
	c.Disconnect(250)
}

// await waits, connected, until the births may go out: every device's
// first poll has ended (at most FirstPollWait after the start, so that
// the births after a restart say who is alive and the data kept from
// before finds them born), and the primary host, if any, is online. ok
// false: the session ended meanwhile (moveOn says whether to try the
// next broker).
func (n *Node) await(ctx context.Context, c mqtt.Client, lost <-chan struct{}, broker string) (moveOn, ok bool) {
	ready := n.ready
	timeout := time.NewTimer(n.cfg.FirstPollWait)
	defer timeout.Stop()
	said := false
	for {
		if ready == nil && (n.cfg.PrimaryHost == "" || n.hostOnline()) {
			return false, true
		}
		if ready == nil && !said {
			n.log.Info("Sparkplug edge node waits for its primary host to be online before its births", "host", n.cfg.PrimaryHost, "broker", broker)
			said = true
		}
		select {
		case <-ctx.Done():
			c.Disconnect(250) // never born: no NDEATH to say
			return false, false
		case <-lost:
			return true, false
		case <-ready:
			ready = nil
		case <-timeout.C:
			ready = nil
		case <-n.hostCh:
		case <-n.rebirth: // nothing born yet: the births come anyway
		}
	}
}

func (n *Node) hostOnline() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.host.online
}

func (n *Node) disconnected() {
	n.mu.Lock()
	n.connected = false
	n.mu.Unlock()
}

// births publishes NBIRTH and a DBIRTH for each live device, then what
// was queued; it reports false if the connection failed.
func (n *Node) births(c mqtt.Client) bool {
	n.mu.Lock()
	n.seq = 0
	nbirth := n.payload([]*sproto.Payload_Metric{n.bdSeqMetric(),
		{Name: proto.String(Rebirth), Datatype: proto.Uint32(uint32(sproto.DataType_Boolean)),
			Value: &sproto.Payload_Metric_BooleanValue{BooleanValue: false}}}, true)
	type msg struct {
		topic string
		body  []byte
	}
	out := []msg{{n.topic("NBIRTH", ""), nbirth}}
	for _, d := range n.devices {
		if d.alive {
			out = append(out, msg{n.topic("DBIRTH", d.ID), n.payload(d.birth(), true)})
		}
	}
	// What was queued before these births (read while the broker was
	// away, or not sent when it went) goes out after them, data of live
	// devices only, flagged historical: the births carry the values now,
	// and say who is alive. From here on, a device born or dead is
	// queued, to go out after these births.
	if !n.connected {
		n.barrier = n.queue.Next()
	}
	n.connected = true
	n.mu.Unlock()
	for _, m := range out {
		if !n.publish(c, m.topic, m.body, 0) {
			return false
		}
	}
	return n.flush(c)
}

// resolve makes queued metrics (by name) the device's metrics of this
// configuration: DBIRTH keeps the name and gains the alias, DATA goes by
// alias alone. A metric the device no longer has is left out.
func (n *Node) resolve(d *Device, ms []*sproto.Payload_Metric, historical bool) []*sproto.Payload_Metric {
	out := ms[:0]
	for _, m := range ms {
		mt := d.byName[m.GetName()]
		if mt == nil {
			continue
		}
		m.Alias = proto.Uint64(mt.alias)
		if m.Datatype == nil {
			m.Name = nil
		}
		if historical {
			m.IsHistorical = proto.Bool(true)
		}
		out = append(out, m)
	}
	return out
}

// flush publishes the queued messages in order; it reports false (the
// unsent ones kept) if the connection failed.
func (n *Node) flush(c mqtt.Client) bool {
	for {
		n.mu.Lock()
		seq := n.seq
		id, topic, body, ok, err := n.next()
		n.mu.Unlock()
		if err != nil {
			n.log.Error("Sparkplug store: reading", "err", err)
			return true // the next message queued tries again
		}
		if !ok {
			return true
		}
		if body != nil && !n.publish(c, topic, body, 0) {
			n.mu.Lock()
			n.seq = seq
			n.mu.Unlock()
			return false
		}
		n.mu.Lock()
		if err := n.queue.Ack(id); err != nil {
			n.log.Error("Sparkplug store: acknowledging", "err", err)
		}
		n.mu.Unlock()
	}
}

// next makes the oldest queued message ready to publish (n.mu held): its
// topic and payload, with the next seq; body is nil for one that is not
// to go out (superseded by the births, or of a device no longer
// configured), to be acknowledged all the same. ok is false if nothing
// is queued.
func (n *Node) next() (id uint64, topic string, body []byte, ok bool, err error) {
	id, rec, ok, err := n.queue.Peek()
	if err != nil || !ok {
		if ok = false; err == nil && n.dropping {
			n.log.Info("Sparkplug store drained; messages were dropped while it was full", "dropped", n.Stats.Dropped.Load())
			n.dropping = false
		}
		return 0, "", nil, false, err
	}
	e, err := decode(rec)
	if err != nil {
		n.log.Warn("Sparkplug store: a message that cannot be read, skipped", "id", id, "err", err)
		return id, "", nil, true, nil
	}
	d := n.byID[e.dev]
	historical := id < n.barrier
	if d == nil || historical && (e.kind != ddata || !d.alive) {
		return id, "", nil, true, nil
	}
	ms := n.resolve(d, e.metrics, historical)
	if e.kind == ddeath {
		ms = nil
	} else if len(ms) == 0 {
		return id, "", nil, true, nil
	}
	kinds := [...]string{dbirth: "DBIRTH", ddata: "DDATA", ddeath: "DDEATH"}
	return id, n.topic(kinds[e.kind], e.dev), n.payload(ms, true), true, nil
}

// publish sends one message and waits until it is written.
func (n *Node) publish(c mqtt.Client, topic string, body []byte, qos byte) bool {
	t := c.Publish(topic, qos, false, body)
	if !t.WaitTimeout(10*time.Second) || t.Error() != nil {
		n.log.Warn("MQTT publish failed", "topic", topic, "err", orTimeout(t.Error()))
		return false
	}
	n.Stats.Published.Add(1)
	return true
}

// message dispatches what the node is subscribed to (in paho's
// goroutine): the primary host's STATE, or a command.
func (n *Node) message(c mqtt.Client, msg mqtt.Message) {
	t := msg.Topic()
	if strings.HasPrefix(t, "STATE/") || strings.HasPrefix(t, Namespace+"/STATE/") {
		n.state(t, msg.Payload())
		return
	}
	n.command(c, msg)
}

// state takes a STATE message of the primary host. Sparkplug 3.0's,
// JSON {"online": true|false, "timestamp": ms}: online counts if not
// older than the last one taken; offline counts if not older than the
// last online (an older one is stale, a host's will from before it came
// back, and ignored). 2.2's (legacy_state), ONLINE or OFFLINE: taken as
// it comes.
func (n *Node) state(topic string, payload []byte) {
	var online bool
	var ts int64
	legacy := strings.HasPrefix(topic, "STATE/")
	if legacy {
		switch string(payload) {
		case "ONLINE":
			online = true
		case "OFFLINE":
		default:
			n.log.Warn("Sparkplug STATE that is neither ONLINE nor OFFLINE, ignored", "topic", topic, "payload", string(payload))
			return
		}
	} else {
		var st struct {
			Online    *bool  `json:"online"`
			Timestamp *int64 `json:"timestamp"`
		}
		if err := json.Unmarshal(payload, &st); err != nil || st.Online == nil || st.Timestamp == nil {
			n.log.Warn("Sparkplug STATE that is not {\"online\": bool, \"timestamp\": ms}, ignored", "topic", topic, "payload", string(payload), "err", err)
			return
		}
		online, ts = *st.Online, *st.Timestamp
	}
	n.mu.Lock()
	if !legacy && ts < n.host.ts {
		n.mu.Unlock()
		n.log.Info("Sparkplug STATE older than the last one taken, ignored", "host", n.cfg.PrimaryHost, "online", online, "timestamp", ts, "last", n.host.ts)
		return
	}
	if !legacy && online {
		n.host.ts = ts
	}
	changed := n.host.online != online
	n.host.online = online
	n.mu.Unlock()
	if changed {
		n.log.Info("Sparkplug primary host", "host", n.cfg.PrimaryHost, "online", online, "timestamp", ts)
	}
	select {
	case n.hostCh <- struct{}{}:
	default:
	}
}

// command handles NCMD and DCMD messages (in paho's goroutine: writes go
// on in their own).
func (n *Node) command(_ mqtt.Client, msg mqtt.Message) {
	var p sproto.Payload
	if err := proto.Unmarshal(msg.Payload(), &p); err != nil {
		n.log.Warn("Sparkplug command that is not a Sparkplug payload, ignored", "topic", msg.Topic(), "err", err)
		return
	}
	parts := strings.Split(msg.Topic(), "/")
	if len(parts) >= 3 && parts[2] == "NCMD" {
		for _, m := range p.Metrics {
			if m.GetName() == Rebirth && m.GetBooleanValue() {
				n.log.Info("Sparkplug rebirth requested")
				select {
				case n.rebirth <- struct{}{}:
				default:
				}
			}
		}
		return
	}
	if len(parts) != 5 {
		return
	}
	d := n.byID[parts[4]]
	if d == nil {
		n.log.Warn("Sparkplug command for an unknown device, ignored", "device", parts[4])
		return
	}
	for _, m := range p.Metrics {
		go n.write(d, m)
	}
}

// write makes a DCMD metric a Modbus write (FC 6 or 16) through the
// gateway's chain, as client "sparkplug" with role "sparkplug" (Role) and
// no network address, so access rules, the rate limit, the queue and the
// log treat it as a client of its own.
func (n *Node) write(d *Device, m *sproto.Payload_Metric) {
	var mt *metric
	for _, x := range d.metrics {
		if m.Name != nil && x.conf.Name == m.GetName() || m.Name == nil && m.Alias != nil && x.alias == m.GetAlias() {
			mt = x
		}
	}
	name := m.GetName()
	if mt != nil {
		name = mt.conf.Name
	}
	fail := func(why string, args ...any) {
		n.Stats.WritesFailed.Add(1)
		n.log.Warn("Sparkplug write failed", append([]any{"device", d.ID, "metric", name, "why", why}, args...)...)
	}
	if mt == nil || !mt.conf.Writable {
		fail("no writable value of that name or alias on the device")
		return
	}
	x, err := getValue(m, mt.dtype)
	if err == nil {
		var regs []uint16
		if regs, err = mt.conf.Encode(x); err == nil {
			n.writeRegs(d, mt, regs, fail)
			return
		}
	}
	fail(err.Error())
}

func (n *Node) writeRegs(d *Device, mt *metric, regs []uint16, fail func(string, ...any)) {
	addr := n.address(d, mt)
	var req []byte
	if len(regs) == 1 {
		req = []byte{pdu.WriteSingleRegister, byte(addr >> 8), byte(addr), byte(regs[0] >> 8), byte(regs[0])}
	} else {
		req = []byte{pdu.WriteMultipleRegisters, byte(addr >> 8), byte(addr), 0, byte(len(regs)), byte(2 * len(regs))}
		for _, r := range regs {
			req = append(req, byte(r>>8), byte(r))
		}
	}
	// The node's own identity, not a network address: the access rules
	// match it by role (or by rules without sources), and the rate limit
	// gives it a bucket of its own.
	tr := &request.Request{Unit: d.Unit, PDU: req, Client: Role, Role: Role, Trace: trace.Next()}
	answer := n.chain.ServeModbus(context.Background(), tr, nil)
	if outcome, exc := tr.Result(answer); outcome != request.OK {
		fail("the write was not done", "outcome", outcome, "exception", exc, "trace", tr.Trace)
		return
	}
	n.Stats.WritesOK.Add(1)
	n.log.Info("Sparkplug write done", "device", d.ID, "metric", mt.conf.Name, "unit", d.Unit, "address", addr, "trace", tr.Trace)
}

// Role is the role of the node's writes (DCMD) for the access rules.
const Role = "sparkplug"

// address is the register a metric starts at.
func (n *Node) address(d *Device, mt *metric) uint16 {
	for k, ms := range n.byPoll {
		if k.unit != d.Unit {
			continue
		}
		for _, x := range ms {
			if x == mt {
				return k.address + uint16(mt.conf.Offset)
			}
		}
	}
	return 0
}
