package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/goburrow/modbus"

	"github.com/mcpgw/mcpgw/pkg/registers"
	"github.com/mcpgw/mcpgw/pkg/tools/sim"
	"github.com/mcpgw/mcpgw/pkg/wire/serialport"
)

// hostMsg is a line from testdata/interop/sparkplug_sub.py: a message it
// received, decoded, or an event of its own.
type hostMsg struct {
	Event     string       `json:"event"`
	Topic     string       `json:"topic"`
	Seq       *int         `json:"seq"`
	Timestamp uint64       `json:"timestamp"`
	Metrics   []hostMetric `json:"metrics"`
	State     string       `json:"state"` // a STATE message's payload
	at        time.Time    // when the host printed it
}

type hostMetric struct {
	Name       *string `json:"name"`
	Alias      *uint64 `json:"alias"`
	Datatype   *int    `json:"datatype"`
	Value      any     `json:"value"`
	Historical bool    `json:"historical"`
	Null       bool    `json:"null"`
}

// spHost is the independent Sparkplug host: Python's paho-mqtt and
// protobuf, the schema compiled by protoc.
type spHost struct {
	stdin io.Writer
	mu    sync.Mutex
	msgs  []hostMsg
	taken []bool // messages expect has returned
}

// persistentHost makes the hosts started next keep their MQTT session
// (a fixed client id, clean session false), so that a broker with
// persistence queues what is published while they are away.
var persistentHost bool

// startHost starts a host that only listens and commands; startHost(t,
// port, id) one that is also a Sparkplug 3.0 primary host of that id
// (its STATE online, its will the STATE offline).
func startHost(t *testing.T, port int, id ...string) *spHost {
	t.Helper()
	h, _ := startHostProcess(t, port, id...)
	return h
}

func startHostProcess(t *testing.T, port int, id ...string) (*spHost, *exec.Cmd) {
	t.Helper()
	dir := t.TempDir()
	if out, err := exec.Command("protoc", "--proto_path=../../pkg/north/sparkplug/sproto", "--python_out="+dir,
		"../../pkg/north/sparkplug/sproto/sparkplug_b.proto").CombinedOutput(); err != nil {
		t.Fatalf("protoc: %v\n%s", err, out)
	}
	cmd := exec.Command("/usr/bin/python3", append([]string{"../../testdata/interop/sparkplug_sub.py", "127.0.0.1", fmt.Sprint(port), dir}, id...)...)
	if persistentHost {
		cmd.Env = append(os.Environ(), "SPHOST_PERSISTENT=1")
	}
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	h := &spHost{stdin: stdin}
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			m := hostMsg{at: time.Now()}
			if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
				t.Errorf("host: %v: %s", err, sc.Text())
				continue
			}
			h.mu.Lock()
			h.msgs = append(h.msgs, m)
			h.mu.Unlock()
		}
	}()
	h.expect(t, "the host connected", func(m hostMsg) bool { return m.Event == "connected" })
	return h, cmd
}

// expect waits for the first message that ok accepts and no earlier
// expect returned, and returns it. Messages of different devices may
// come in any order; one expect takes one message.
func (h *spHost) expect(t *testing.T, what string, ok func(hostMsg) bool) hostMsg {
	t.Helper()
	for end := time.Now().Add(15 * time.Second); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		h.mu.Lock()
		for len(h.taken) < len(h.msgs) {
			h.taken = append(h.taken, false)
		}
		for i, m := range h.msgs {
			if !h.taken[i] && ok(m) {
				h.taken[i] = true
				h.mu.Unlock()
				return m
			}
		}
		h.mu.Unlock()
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	var seen []string
	for _, m := range h.msgs {
		b, _ := json.Marshal(m)
		seen = append(seen, string(b))
	}
	t.Fatalf("no %s; the host saw:\n%s", what, strings.Join(seen, "\n"))
	return hostMsg{}
}

// raw publishes a payload as it is (QoS 1), retained or not.
func (h *spHost) raw(t *testing.T, topic, payload string, retain bool) {
	t.Helper()
	b, _ := json.Marshal(map[string]any{"topic": topic, "raw": payload, "retain": retain})
	if _, err := h.stdin.Write(append(b, '\n')); err != nil {
		t.Fatal(err)
	}
}

// none checks that no message ok accepts (and no expect took) comes
// within d.
func (h *spHost) none(t *testing.T, what string, d time.Duration, ok func(hostMsg) bool) {
	t.Helper()
	time.Sleep(d)
	h.mu.Lock()
	defer h.mu.Unlock()
	for i, m := range h.msgs {
		if (i >= len(h.taken) || !h.taken[i]) && ok(m) {
			b, _ := json.Marshal(m)
			t.Fatalf("%s, yet: %s", what, b)
		}
	}
}

// send publishes a Sparkplug command from the spHost.
func (h *spHost) send(t *testing.T, topic string, metrics ...map[string]any) {
	t.Helper()
	b, _ := json.Marshal(map[string]any{"topic": topic, "metrics": metrics})
	if _, err := h.stdin.Write(append(b, '\n')); err != nil {
		t.Fatal(err)
	}
}

func (m hostMsg) metric(name string) *hostMetric {
	for i := range m.Metrics {
		if n := m.Metrics[i].Name; n != nil && *n == name {
			return &m.Metrics[i]
		}
	}
	return nil
}

func (m hostMsg) byAlias(alias uint64) *hostMetric {
	for i := range m.Metrics {
		if a := m.Metrics[i].Alias; a != nil && *a == alias {
			return &m.Metrics[i]
		}
	}
	return nil
}

func (m *hostMetric) number() float64 {
	f, _ := m.Value.(float64) // JSON numbers
	return f
}

// broker is Mosquitto on a loopback port, started and killed by the test.
// Its log (every packet, log_type all) is an independent witness of what
// the node sent: CONNECT flags, the will, SUBSCRIBE and PUBLISH with
// their QoS and retain flags, in the order received.
type broker struct {
	port    int
	cmd     *exec.Cmd
	log     *os.File
	persist string // a directory: sessions outlive a stop (not a kill), QoS 0 queued for them too
}

func newBroker(t *testing.T) *broker {
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	defer l.Close()
	return &broker{port: l.Addr().(*net.TCPAddr).Port}
}

// logText is everything the broker logged, across its restarts.
func (b *broker) logText() string {
	if b.log == nil {
		return ""
	}
	bs, _ := os.ReadFile(b.log.Name())
	return string(bs)
}

func (b *broker) start(t *testing.T) {
	t.Helper()
	dir := t.TempDir()
	conf := filepath.Join(dir, "mosquitto.conf")
	persistence := "persistence false\n"
	if b.persist != "" {
		os.Chmod(b.persist, 0o777) // mosquitto started as root writes as user mosquitto
		persistence = fmt.Sprintf("persistence true\npersistence_location %s/\nqueue_qos0_messages true\n", b.persist)
	}
	os.WriteFile(conf, []byte(fmt.Sprintf("listener %d 127.0.0.1\nallow_anonymous true\n%slog_type all\nlog_dest stderr\n", b.port, persistence)), 0o644)
	b.cmd = exec.Command("mosquitto", "-c", conf)
	if b.log == nil {
		f, err := os.Create(filepath.Join(t.TempDir(), "mosquitto.log"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		b.log = f
	}
	b.cmd.Stderr = b.log
	if err := b.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	for end := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", b.port)); err == nil {
			c.Close()
			return
		}
		if time.Now().After(end) {
			t.Fatal("mosquitto did not start")
		}
	}
}

// stop stops the broker as its service would (SIGTERM): persistent
// sessions are saved.
func (b *broker) stop() {
	if b.cmd != nil {
		b.cmd.Process.Signal(syscall.SIGTERM)
		b.cmd.Wait()
		b.cmd = nil
	}
}

func (b *broker) kill() {
	if b.cmd != nil {
		b.cmd.Process.Kill()
		b.cmd.Wait()
		b.cmd = nil
	}
}

func putFloat32(m *registers.Model, addr int, f float32) {
	m.Lock()
	defer m.Unlock()
	u := math.Float32bits(f)
	m.Holding[addr], m.Holding[addr+1] = uint16(u>>16), uint16(u)
}

// TestSparkplugEdgeNode runs the gateway as a process with two simulated
// units polled in agent mode, publishing to Mosquitto, with an
// independent Sparkplug spHost (Python) subscribed: the births and their
// values, data on change, seq, a DCMD write reaching the device, a
// device unplugged and replugged, a rebirth, the broker killed and
// restarted (values read meanwhile arrive flagged historical after the
// new births, under a fresh bdSeq), and the gateway killed (its will).
func TestSparkplugEdgeNode(t *testing.T) {
	requireSparkplugTools(t)
	bin := mcpgwBinary(t)
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	b := &broker{port: l.Addr().(*net.TCPAddr).Port}
	l.Close()
	b.start(t)
	defer b.kill()
	h := startHost(t, b.port)

	pty, err := serialport.NewPty()
	if err != nil {
		t.Fatal(err)
	}
	units := sim.NewUnits([]byte{1, 2}, 100)
	dev := &sim.Line{Port: pty.Device, Units: units}
	stop := dev.Start()
	defer func() { stop(); pty.Close() }()
	u1, u2 := units[1], units[2]
	putFloat32(u1, 0, 21.5)
	u1.Holding[2] = 700
	pressure := int32(-1234)
	raw := uint32(pressure) // -123.4 at scale 0.1, words swapped (CDAB)
	u1.Holding[3], u1.Holding[4] = uint16(raw), uint16(raw>>16)
	u1.Holding[5] = 1 << 3
	u2.Holding[10], u2.Holding[11] = uint16(123456>>16), uint16(123456&0xFFFF)

	addr := freeAddr(t)
	cfg := writeConfig(t, fmt.Sprintf(`
[server]
listen = %q
rate_limit = 1
[mqtt]
broker = "tcp://127.0.0.1:%d"
group = "plant1"
node = "edge1"
buffer = 100
[[bus]]
name = "l1"
port = %q
parity = "N"
timeout = "100ms"
retries = 0
units = [1, 2]
offline_after = 2
probe_interval = "300ms"
[[bus.poll]]
unit = 1
function = 3
address = 0
count = 8
interval = "200ms"
device = "boiler1"
[[bus.poll.value]]
name = "temperature"
offset = 0
type = "float32"
[[bus.poll.value]]
name = "setpoint"
offset = 2
type = "uint16"
writable = true
[[bus.poll.value]]
name = "pressure"
offset = 3
type = "int32"
order = "CDAB"
scale = 0.1
[[bus.poll.value]]
name = "running"
offset = 5
type = "bool"
bit = 3
[[bus.poll]]
unit = 2
function = 3
address = 10
count = 2
interval = "200ms"
[[bus.poll.value]]
name = "counter"
offset = 0
type = "uint32"
`, addr, b.port, pty.Path))
	stderr := logOf(t)
	gw := exec.Command(bin, "run", "-config", cfg)
	gw.Stderr = stderr.f
	if err := gw.Start(); err != nil {
		t.Fatal(err)
	}
	defer gw.Process.Kill()
	defer func() {
		if t.Failed() {
			t.Logf("gateway log:\n%s", stderr.String())
		}
	}()

	topic := func(kind, device string) string {
		s := "spBv1.0/plant1/" + kind + "/edge1"
		if device != "" {
			s += "/" + device
		}
		return s
	}
	is := func(kind, device string) func(hostMsg) bool {
		return func(m hostMsg) bool { return m.Topic == topic(kind, device) }
	}
	// Births: the node's, then each device's, with every value.
	nb := h.expect(t, "NBIRTH", is("NBIRTH", ""))
	bd := nb.metric("bdSeq")
	if nb.Seq == nil || *nb.Seq != 0 || bd == nil || *bd.Datatype != 4 || nb.metric("Node Control/Rebirth") == nil {
		t.Fatalf("NBIRTH: %+v", nb)
	}
	bdSeq := bd.number()
	birth := h.expect(t, "DBIRTH boiler1", is("DBIRTH", "boiler1"))
	for _, want := range []struct {
		name     string
		datatype int
		value    any
	}{{"temperature", 9, 21.5}, {"setpoint", 6, 700.0}, {"pressure", 10, -123.4}, {"running", 11, true}} {
		m := birth.metric(want.name)
		if m == nil || m.Alias == nil || *m.Datatype != want.datatype {
			t.Fatalf("DBIRTH boiler1: %s: %+v", want.name, m)
		}
		if f, ok := want.value.(float64); ok && math.Abs(m.number()-f) > 1e-6 || !ok && m.Value != want.value {
			t.Errorf("DBIRTH boiler1: %s = %v, the device holds %v", want.name, m.Value, want.value)
		}
	}
	if c := h.expect(t, "DBIRTH l1-unit2", is("DBIRTH", "l1-unit2")).metric("counter"); c == nil || c.number() != 123456 || *c.Datatype != 7 {
		t.Fatalf("DBIRTH l1-unit2: counter %+v", c)
	}
	alias := func(name string) uint64 { return *birth.metric(name).Alias }

	// Data on change: only what changed, by alias.
	putFloat32(u1, 0, 25)
	dd := h.expect(t, "DDATA with the new temperature", func(m hostMsg) bool {
		v := m.byAlias(alias("temperature"))
		return m.Topic == topic("DDATA", "boiler1") && v != nil && v.number() == 25
	})
	if len(dd.Metrics) != 1 || dd.Metrics[0].Name != nil {
		t.Fatalf("DDATA: %+v, want the temperature alone, by alias", dd)
	}

	// A write from the spHost reaches the device, and comes back as data,
	// though a local Modbus client has just spent 127.0.0.1's rate: the
	// node's writes have a bucket of their own.
	mh := modbus.NewTCPClientHandler(addr)
	mh.SlaveId, mh.Timeout = 1, 2*time.Second
	limited := false
	for range 5 {
		if _, err := modbus.NewClient(mh).ReadHoldingRegisters(0, 1); err != nil {
			if me, ok := err.(*modbus.ModbusError); ok && me.ExceptionCode == 0x06 {
				limited = true
			}
		}
	}
	mh.Close()
	if !limited {
		t.Fatal("five reads at once from 127.0.0.1 were not rate-limited (rate_limit = 1)")
	}
	h.send(t, topic("DCMD", "boiler1"), map[string]any{"name": "setpoint", "datatype": 6, "value": 1234})
	h.expect(t, "DDATA with the setpoint written", func(m hostMsg) bool {
		v := m.byAlias(alias("setpoint"))
		return m.Topic == topic("DDATA", "boiler1") && v != nil && v.number() == 1234
	})
	u1.Lock()
	setpoint := u1.Holding[2]
	u1.Unlock()
	if setpoint != 1234 {
		t.Fatalf("the device's setpoint register holds %d after the DCMD write", setpoint)
	}

	// A device unplugged dies, and is born again when it answers.
	dev.Mute(2, true)
	h.expect(t, "DDEATH l1-unit2", is("DDEATH", "l1-unit2"))
	dev.Mute(2, false)
	h.expect(t, "DBIRTH l1-unit2 again", is("DBIRTH", "l1-unit2"))

	// A rebirth on request: NBIRTH with seq 0 and the same bdSeq.
	h.send(t, topic("NCMD", ""), map[string]any{"name": "Node Control/Rebirth", "datatype": 11, "value": true})
	if rb := h.expect(t, "NBIRTH on rebirth", is("NBIRTH", "")); rb.metric("bdSeq").number() != bdSeq || *rb.Seq != 0 {
		t.Fatalf("rebirth NBIRTH: %+v", rb)
	}
	h.expect(t, "DBIRTH boiler1 on rebirth", is("DBIRTH", "boiler1"))

	// The broker dies; values read meanwhile come after the next births,
	// historical, under a fresh bdSeq.
	b.kill()
	for _, v := range []float32{30, 31, 32} {
		putFloat32(u1, 0, v)
		time.Sleep(450 * time.Millisecond)
	}
	b.start(t)
	nb2 := h.expect(t, "NBIRTH after the broker came back", is("NBIRTH", ""))
	if got := nb2.metric("bdSeq").number(); got != bdSeq+1 {
		t.Fatalf("bdSeq %v after a reconnect, want %v", got, bdSeq+1)
	}
	if m := h.expect(t, "DBIRTH boiler1 after the broker came back", is("DBIRTH", "boiler1")).metric("temperature"); m.number() != 32 {
		t.Fatalf("DBIRTH after the reconnect: temperature %v, want 32", m.Value)
	}
	for _, v := range []float64{30, 31} {
		h.expect(t, fmt.Sprintf("historical DDATA with temperature %v", v), func(m hostMsg) bool {
			x := m.byAlias(alias("temperature"))
			return m.Topic == topic("DDATA", "boiler1") && x != nil && x.number() == v && x.Historical
		})
	}

	// Sequence numbers: every message of a session but NDEATH, one more
	// than the last, from 0 at each NBIRTH.
	h.mu.Lock()
	last := -1
	for _, m := range h.msgs {
		if m.Event != "" || strings.Contains(m.Topic, "NDEATH") || strings.Contains(m.Topic, "CMD") {
			continue
		}
		if strings.Contains(m.Topic, "NBIRTH") {
			last = -1
		}
		if m.Seq == nil || *m.Seq != (last+1)%256 {
			h.mu.Unlock()
			t.Fatalf("%s: seq %v after %d", m.Topic, m.Seq, last)
		}
		last = *m.Seq
	}
	h.mu.Unlock()

	// The gateway killed: the broker publishes its will, NDEATH with the
	// session's bdSeq.
	gw.Process.Signal(syscall.SIGKILL)
	gw.Wait()
	if d := h.expect(t, "NDEATH (the will)", is("NDEATH", "")); d.metric("bdSeq").number() != bdSeq+1 {
		t.Fatalf("NDEATH: %+v, want bdSeq %v", d, bdSeq+1)
	}
}

// TestSparkplugOverTLS: an ssl:// broker that wants a client certificate
// (Mosquitto with certificates made by the openssl command line): the
// node connects with mqtt.ca, mqtt.cert and mqtt.key and is born; the
// host listens on the broker's plain listener.
func TestSparkplugOverTLS(t *testing.T) {
	requireSparkplugTools(t, "openssl")
	pem := testPKI(t, struct{ name, ext string }{"broker", "subjectAltName = IP:127.0.0.1\n"},
		struct{ name, ext string }{"edge1", "extendedKeyUsage = clientAuth\n"})
	free := func() int {
		l, _ := net.Listen("tcp", "127.0.0.1:0")
		defer l.Close()
		return l.Addr().(*net.TCPAddr).Port
	}
	tlsPort, plainPort := free(), free()
	conf := filepath.Join(t.TempDir(), "mosquitto.conf")
	os.WriteFile(conf, []byte(fmt.Sprintf("allow_anonymous true\npersistence false\n"+
		"listener %d 127.0.0.1\ncafile %s\ncertfile %s\nkeyfile %s\nrequire_certificate true\n"+
		"listener %d 127.0.0.1\n", tlsPort, pem("ca", "crt"), pem("broker", "crt"), pem("broker", "key"), plainPort)), 0o644)
	broker := exec.Command("mosquitto", "-c", conf)
	brokerLog := logOf(t)
	broker.Stderr = brokerLog.f
	if err := broker.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { broker.Process.Kill(); broker.Wait() }()
	defer func() {
		if t.Failed() {
			t.Logf("broker log:\n%s", brokerLog.String())
		}
	}()
	h := startHost(t, plainPort)

	pty, err := serialport.NewPty()
	if err != nil {
		t.Fatal(err)
	}
	stop := (&sim.Line{Port: pty.Device, Units: sim.NewUnits([]byte{1}, 10)}).Start()
	defer func() { stop(); pty.Close() }()
	cfg := writeConfig(t, fmt.Sprintf(`
[server]
listen = "127.0.0.1:0"
[mqtt]
broker = "ssl://127.0.0.1:%d"
group = "plant1"
node = "edge1"
ca = %q
cert = %q
key = %q
[[bus]]
name = "l1"
port = %q
parity = "N"
units = [1]
[[bus.poll]]
unit = 1
function = 3
count = 1
interval = "200ms"
[[bus.poll.value]]
name = "r0"
type = "uint16"
`, tlsPort, pem("ca", "crt"), pem("edge1", "crt"), pem("edge1", "key"), pty.Path))
	gw := exec.Command(mcpgwBinary(t), "run", "-config", cfg)
	stderr := logOf(t)
	gw.Stderr = stderr.f
	if err := gw.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { gw.Process.Signal(syscall.SIGTERM); gw.Wait() }()
	defer func() {
		if t.Failed() {
			t.Logf("gateway log:\n%s", stderr.String())
		}
	}()
	h.expect(t, "NBIRTH over TLS", func(m hostMsg) bool { return m.Topic == "spBv1.0/plant1/NBIRTH/edge1" })
	if r0 := h.expect(t, "DBIRTH over TLS", func(m hostMsg) bool { return m.Topic == "spBv1.0/plant1/DBIRTH/edge1/l1-unit1" }).metric("r0"); r0 == nil || r0.number() != 1000 {
		t.Fatalf("DBIRTH r0: %+v, want the device's 1000", r0)
	}
}
