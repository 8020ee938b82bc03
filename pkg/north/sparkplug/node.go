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
// on: DDATA wait in a bounded buffer (oldest dropped first, counted) and
// are published, flagged historical, after the births of the next
// session, which has a fresh bdSeq.
package sparkplug

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
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
	alive   bool // born in this session's terms: its last poll answered
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

// event is a message waiting to go out: its metrics are a snapshot.
type event struct {
	id      uint64 // in the order queued
	kind    kind
	dev     *Device
	metrics []*sproto.Payload_Metric // historical ones say so (IsHistorical)
}

// Stats count the node's work.
type Stats struct {
	Published    atomic.Uint64 // messages published
	Dropped      atomic.Uint64 // buffered messages dropped, the buffer full
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

	mu        sync.Mutex // guards the devices' state, queue and connected
	queue     []event
	queued    uint64 // events ever queued: the next one's id
	connected bool
	wake      chan struct{}
	rebirth   chan struct{}
	bdSeq     uint64
	seq       uint8 // the next message's; guarded by mu
	cancel    context.CancelFunc
	done      chan struct{}
}

// Config is the node's session: the broker, who it is there, and how
// much it keeps while the broker is away.
type Config struct {
	Broker             string      // tcp://host:1883 or ssl://host:8883
	TLS                *tls.Config // for ssl://
	ClientID           string
	Group, Node        string // Sparkplug group and edge node ids
	Username, Password string
	Buffer             int // messages kept while the broker is away, oldest dropped first
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
	n := &Node{cfg: cfg, chain: chain, offline: offline, log: log,
		byID: make(map[string]*Device), byPoll: make(map[pollKey][]*metric), devOf: make(map[pollKey]*Device),
		wake: make(chan struct{}, 1), rebirth: make(chan struct{}, 1), done: make(chan struct{})}
	var alias uint64
	for _, b := range blocks {
		if len(b.Tags) == 0 {
			continue
		}
		d := n.byID[b.Device]
		if d == nil {
			d = &Device{ID: b.Device, Unit: b.Unit}
			n.byID[b.Device] = d
			n.devices = append(n.devices, d)
		}
		k := pollKey{b.Unit, b.Function, b.Address, b.Count}
		n.devOf[k] = d
		for _, v := range b.Tags {
			alias++
			mt := &metric{conf: v, alias: alias, dtype: dataType(&v)}
			d.metrics = append(d.metrics, mt)
			n.byPoll[k] = append(n.byPoll[k], mt)
		}
	}
	return n
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
	if !ok {
		if d.alive && n.offline != nil && n.offline(d.Unit) {
			d.alive = false
			n.push(event{kind: ddeath, dev: d})
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
			changedMetrics = append(changedMetrics, mt.data())
		}
	}
	switch {
	case !d.alive:
		d.alive = true
		n.push(event{kind: dbirth, dev: d, metrics: d.birth()})
	case len(changedMetrics) > 0:
		n.push(event{kind: ddata, dev: d, metrics: changedMetrics})
	}
}

// push queues e (n.mu held), dropping the oldest past the buffer.
func (n *Node) push(e event) {
	if !n.connected {
		if e.kind != ddata {
			return // the next session's births say who is alive
		}
		for _, m := range e.metrics {
			m.IsHistorical = proto.Bool(true)
		}
	}
	if len(n.queue) >= n.cfg.Buffer {
		n.queue = n.queue[1:]
		n.Stats.Dropped.Add(1)
	}
	n.queued++
	e.id = n.queued
	n.queue = append(n.queue, e)
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

// Stop publishes NDEATH (a clean goodbye; the will covers the rest) and
// disconnects.
func (n *Node) Stop() {
	if n.cancel != nil {
		n.cancel()
		<-n.done
	}
}

// run connects, runs a session, and reconnects with backoff (1 s doubling
// to 30 s) with a fresh bdSeq each time, until ctx ends.
func (n *Node) run(ctx context.Context) {
	backoff := time.Second
	failing := false
	for ctx.Err() == nil {
		client, lost, err := n.connect()
		if err != nil {
			if !failing {
				n.log.Warn("MQTT broker unreachable, retrying; values wait in the buffer", "broker", n.cfg.Broker, "err", err, "retry_in", backoff)
				failing = true
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 30*time.Second)
			continue
		}
		backoff, failing = time.Second, false
		n.session(ctx, client, lost)
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

// connect opens an MQTT session with this bdSeq's NDEATH as its will and
// subscribes to the node's commands.
func (n *Node) connect() (mqtt.Client, <-chan struct{}, error) {
	lost := make(chan struct{})
	opts := mqtt.NewClientOptions().AddBroker(n.cfg.Broker).SetClientID(n.cfg.ClientID).
		SetCleanSession(true).SetAutoReconnect(false).SetConnectRetry(false).
		SetKeepAlive(10*time.Second).SetConnectTimeout(5*time.Second).SetWriteTimeout(5*time.Second).
		SetWill(n.topic("NDEATH", ""), string(n.payload([]*sproto.Payload_Metric{n.bdSeqMetric()}, false)), 1, false).
		SetConnectionLostHandler(func(_ mqtt.Client, err error) {
			n.log.Warn("MQTT connection lost; values wait in the buffer", "broker", n.cfg.Broker, "err", err)
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
	// Commands first: nothing is published before they are subscribed.
	subs := map[string]byte{n.topic("NCMD", ""): 1, n.topic("DCMD", "+"): 1}
	if t := c.SubscribeMultiple(subs, n.command); !t.WaitTimeout(10*time.Second) || t.Error() != nil {
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

// session publishes the births, then whatever is queued, until the
// connection is lost or ctx ends.
func (n *Node) session(ctx context.Context, c mqtt.Client, lost <-chan struct{}) {
	if !n.births(c) {
		n.disconnected()
		c.Disconnect(0)
		return
	}
	n.Stats.Sessions.Add(1)
	n.log.Info("Sparkplug edge node online", "broker", n.cfg.Broker, "group", n.cfg.Group, "node", n.cfg.Node,
		"bdSeq", n.bdSeq, "devices", len(n.devices))
	for {
		select {
		case <-ctx.Done():
			n.disconnected()
			n.publish(c, n.topic("NDEATH", ""), n.payload([]*sproto.Payload_Metric{n.bdSeqMetric()}, false), 1)
			c.Disconnect(250)
			return
		case <-lost:
			n.disconnected()
			return
		case <-n.rebirth:
			if !n.births(c) {
				n.disconnected()
				c.Disconnect(0)
				return
			}
		case <-n.wake:
			if !n.flush(c) {
				n.disconnected()
				c.Disconnect(0)
				return
			}
		}
	}
}

func (n *Node) disconnected() {
	n.mu.Lock()
	n.connected = false
	n.mu.Unlock()
}

// births publishes NBIRTH and a DBIRTH for each live device, drops what
// the births supersede, and then what was queued; it reports false if
// the connection failed.
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
	// Data queued before these births (read while the broker was away, or
	// not sent when it went) stays, flagged historical, for live devices:
	// the births carry the values now. Births and deaths are superseded.
	kept := n.queue[:0]
	for _, e := range n.queue {
		if e.kind == ddata && e.dev.alive {
			for _, m := range e.metrics {
				m.IsHistorical = proto.Bool(true)
			}
			kept = append(kept, e)
		}
	}
	n.queue = kept
	// Connected from here: a device born or dead from now on is queued,
	// to go out after these births, not left to births already made.
	n.connected = true
	n.mu.Unlock()
	for _, m := range out {
		if !n.publish(c, m.topic, m.body, 0) {
			return false
		}
	}
	return n.flush(c)
}

// flush publishes the queued messages in order; it reports false (the
// unsent ones kept) if the connection failed.
func (n *Node) flush(c mqtt.Client) bool {
	for {
		n.mu.Lock()
		if len(n.queue) == 0 {
			n.mu.Unlock()
			return true
		}
		e := n.queue[0]
		kinds := [...]string{dbirth: "DBIRTH", ddata: "DDATA", ddeath: "DDEATH"}
		var metrics []*sproto.Payload_Metric
		if e.kind != ddeath {
			metrics = e.metrics
		}
		seq := n.seq
		body := n.payload(metrics, true)
		n.mu.Unlock()
		if !n.publish(c, n.topic(kinds[e.kind], e.dev.ID), body, 0) {
			n.mu.Lock()
			n.seq = seq
			n.mu.Unlock()
			return false
		}
		n.mu.Lock()
		if len(n.queue) > 0 && n.queue[0].id == e.id { // not dropped meanwhile
			n.queue = n.queue[1:]
		}
		n.mu.Unlock()
	}
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
