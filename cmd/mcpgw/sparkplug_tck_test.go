package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mcpgw/mcpgw/pkg/registers"
	"github.com/mcpgw/mcpgw/pkg/tools/sim"
	"github.com/mcpgw/mcpgw/pkg/wire/serialport"
)

// The edge node's side of the Sparkplug 3.0 TCK, each test named for
// the assertions it checks, against real Mosquitto brokers (whose logs
// show what the node sent, packet by packet) and an independent host
// (testdata/interop/sparkplug_sub.py: Python's paho-mqtt and protobuf).

// requireSparkplugTools skips a test (fails it under CI) without the
// broker, protoc and Python, and any more tools it names.
func requireSparkplugTools(t *testing.T, more ...string) {
	t.Helper()
	if testing.Short() {
		t.Skip("runs brokers and the binary")
	}
	for _, tool := range append([]string{"mosquitto", "protoc", "/usr/bin/python3"}, more...) {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("%s is not installed: .ci/run must install it (mosquitto protobuf-compiler python3-paho-mqtt python3-protobuf)", tool)
			}
			t.Skipf("%s is not installed", tool)
		}
	}
}

// spRig is the gateway with one simulated unit on a pseudo-terminal
// line, polled in agent mode every poll: its registers 0-3 published as
// the Sparkplug metrics c0-c3 of device "meter".
type spRig struct {
	unit *registers.Model
	cfg  string
	gw   *exec.Cmd
	logs []processLog
}

func startSpRig(t *testing.T, mqtt string, poll time.Duration) *spRig {
	t.Helper()
	pty, err := serialport.NewPty()
	if err != nil {
		t.Fatal(err)
	}
	units := sim.NewUnits([]byte{1}, 10)
	stop := (&sim.Line{Port: pty.Device, Units: units}).Start()
	t.Cleanup(func() { stop(); pty.Close() })
	r := &spRig{unit: units[1]}
	r.set(0)
	values := ""
	for i := range 4 {
		values += fmt.Sprintf("[[bus.poll.value]]\nname = \"c%d\"\noffset = %d\ntype = \"uint16\"\n", i, i)
	}
	r.cfg = writeConfig(t, fmt.Sprintf(`
[server]
listen = "127.0.0.1:0"
[mqtt]
group = "plant1"
node = "edge1"
%s
[[bus]]
name = "l1"
port = %q
parity = "N"
timeout = "100ms"
units = [1]
[[bus.poll]]
unit = 1
function = 3
count = 4
interval = %q
device = "meter"
%s`, mqtt, pty.Path, poll, values))
	r.start(t)
	t.Cleanup(func() {
		r.kill()
		if t.Failed() {
			for i, l := range r.logs {
				t.Logf("gateway log (run %d):\n%s", i+1, l.String())
			}
		}
	})
	return r
}

func (r *spRig) start(t *testing.T) {
	t.Helper()
	r.gw = exec.Command(mcpgwBinary(t), "run", "-config", r.cfg)
	l := logOf(t)
	r.logs = append(r.logs, l)
	r.gw.Stderr = l.f
	if err := r.gw.Start(); err != nil {
		t.Fatal(err)
	}
}

func (r *spRig) kill() {
	if r.gw != nil {
		r.gw.Process.Signal(syscall.SIGKILL)
		r.gw.Wait()
		r.gw = nil
	}
}

func (r *spRig) terminate() {
	r.gw.Process.Signal(syscall.SIGTERM)
	r.gw.Wait()
	r.gw = nil
}

// set puts v in the four registers.
func (r *spRig) set(v uint16) {
	r.unit.Lock()
	defer r.unit.Unlock()
	for i := range 4 {
		r.unit.Holding[i] = v
	}
}

func spTopic(kind string) string {
	if kind == "DBIRTH" || kind == "DDATA" || kind == "DDEATH" || kind == "DCMD" {
		return "spBv1.0/plant1/" + kind + "/edge1/meter"
	}
	return "spBv1.0/plant1/" + kind + "/edge1"
}

func isTopic(kind string) func(hostMsg) bool {
	return func(m hostMsg) bool { return m.Topic == spTopic(kind) }
}

// brokerLines are the lines of a broker's log about the node's client,
// with the lines that continue them (a will's topic, a subscription's).
func brokerLines(log string) []string {
	var out []string
	follow := false
	for _, l := range strings.Split(log, "\n") {
		_, text, _ := strings.Cut(l, ": ")
		switch {
		case strings.HasPrefix(text, "\t"):
			if follow {
				out = append(out, text)
			}
		case strings.Contains(text, "mcpgw-edge1") || follow && strings.HasPrefix(text, "Will message"):
			out = append(out, text)
			follow = true
		default:
			follow = false
		}
	}
	return out
}

func indexOf(lines []string, re string, from int) int {
	rx := regexp.MustCompile(re)
	for i := from; i < len(lines); i++ {
		if rx.MatchString(lines[i]) {
			return i
		}
	}
	return -1
}

// checkSeq: every message of a session but NDEATH carries seq one more
// than the last, from 0 at each NBIRTH (tck-id-payloads-sequence-num-*).
func checkSeq(t *testing.T, h *spHost) {
	t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	last := -1
	for _, m := range h.msgs {
		if m.Event != "" || m.State != "" || strings.Contains(m.Topic, "STATE") || strings.Contains(m.Topic, "NDEATH") || strings.Contains(m.Topic, "CMD") {
			continue
		}
		if strings.Contains(m.Topic, "NBIRTH") {
			last = -1
		}
		if m.Seq == nil || *m.Seq != (last+1)%256 {
			t.Fatalf("%s: seq %v after %d", m.Topic, m.Seq, last)
		}
		last = *m.Seq
	}
}

// TestSparkplugTCKSession: session establishment and termination, as
// Mosquitto's log of the node's packets and the host show them.
func TestSparkplugTCKSession(t *testing.T) {
	requireSparkplugTools(t)
	b := newBroker(t)
	b.start(t)
	defer b.kill()
	h := startHost(t, b.port)
	r := startSpRig(t, fmt.Sprintf("brokers = [\"tcp://127.0.0.1:%d\"]\nstore = %q", b.port, t.TempDir()), 100*time.Millisecond)

	nb := h.expect(t, "NBIRTH", isTopic("NBIRTH"))
	h.expect(t, "DBIRTH", isTopic("DBIRTH"))
	bdSeq := nb.metric("bdSeq").number()
	r.set(7)
	h.expect(t, "DDATA", isTopic("DDATA"))
	h.send(t, spTopic("NCMD"), map[string]any{"name": "Node Control/Rebirth", "datatype": 11, "value": true})
	rb := h.expect(t, "NBIRTH on rebirth", isTopic("NBIRTH"))
	h.expect(t, "DBIRTH on rebirth", isTopic("DBIRTH"))
	r.terminate()
	nd := h.expect(t, "NDEATH on stopping", isTopic("NDEATH"))
	r.start(t)
	nb2 := h.expect(t, "NBIRTH after a restart", isTopic("NBIRTH"))
	h.expect(t, "DBIRTH after a restart", isTopic("DBIRTH"))
	r.kill()
	will := h.expect(t, "NDEATH, the will, after a kill -9", isTopic("NDEATH"))
	lines := brokerLines(b.logText())

	t.Run("principles-persistence-clean-session-311", func(t *testing.T) {
		if i := indexOf(lines, `^New client connected .* as mcpgw-edge1 \(p2, c1,`, 0); i < 0 {
			t.Fatalf("no CONNECT with MQTT 3.1.1 and clean session:\n%s", strings.Join(lines, "\n"))
		}
	})
	t.Run("message-flow-edge-node-birth-publish-will-message-qos-and-retained", func(t *testing.T) {
		i := indexOf(lines, `^Will message specified \(\d+ bytes\) \(r0, q1\)`, 0)
		if i < 0 || lines[i+1] != "\t"+spTopic("NDEATH") {
			t.Fatalf("no will on NDEATH at QoS 1, not retained:\n%s", strings.Join(lines, "\n"))
		}
	})
	t.Run("message-flow-edge-node-ncmd-subscribe-and-device-dcmd-subscribe-before-nbirth", func(t *testing.T) {
		sub := indexOf(lines, `^Received SUBSCRIBE from mcpgw-edge1`, 0)
		birth := indexOf(lines, `^Received PUBLISH from mcpgw-edge1 .*'`+spTopic("NBIRTH")+`'`, 0)
		ncmd := indexOf(lines, `^\t`+regexp.QuoteMeta(spTopic("NCMD"))+` \(QoS 1\)`, sub)
		dcmd := indexOf(lines, `^\t`+regexp.QuoteMeta("spBv1.0/plant1/DCMD/edge1/+")+` \(QoS 1\)`, sub)
		if sub < 0 || birth < 0 || ncmd < 0 || dcmd < 0 || ncmd > birth || dcmd > birth {
			t.Fatalf("NCMD and DCMD not subscribed at QoS 1 before NBIRTH (subscribe %d, NCMD %d, DCMD %d, NBIRTH %d):\n%s",
				sub, ncmd, dcmd, birth, strings.Join(lines, "\n"))
		}
	})
	t.Run("message-flow-edge-node-birth-publish-nbirth-qos-retained-and-dbirth", func(t *testing.T) {
		n := 0
		for _, l := range lines {
			if strings.Contains(l, "BIRTH/edge1") {
				n++
				if !strings.Contains(l, "(d0, q0, r0,") {
					t.Fatalf("a birth not at QoS 0, not retained: %s", l)
				}
			}
		}
		if n < 6 {
			t.Fatalf("%d births in the broker's log, want 6", n)
		}
	})
	t.Run("message-flow-edge-node-birth-publish-nbirth-payload-seq", func(t *testing.T) {
		for _, m := range []hostMsg{nb, rb, nb2} {
			if m.Seq == nil || *m.Seq != 0 {
				t.Fatalf("NBIRTH seq %v", m.Seq)
			}
		}
		checkSeq(t, h)
	})
	t.Run("payloads-ndeath-bdseq-and-rebirth", func(t *testing.T) {
		if rb.metric("bdSeq").number() != bdSeq || nd.metric("bdSeq").number() != bdSeq {
			t.Fatalf("bdSeq: NBIRTH %v, rebirth %v, NDEATH %v: want one", bdSeq, rb.metric("bdSeq").Value, nd.metric("bdSeq").Value)
		}
	})
	t.Run("message-flow-edge-node-birth-publish-will-message-payload-bdSeq", func(t *testing.T) {
		// One more after a restart (the store keeps it), and the will
		// carries the session's.
		if got := nb2.metric("bdSeq").number(); got != float64((int(bdSeq)+1)%256) {
			t.Fatalf("bdSeq %v after a restart, want %v", got, bdSeq+1)
		}
		if will.metric("bdSeq").number() != nb2.metric("bdSeq").number() || *will.metric("bdSeq").Datatype != 4 {
			t.Fatalf("the will's bdSeq %+v, the session's %v", will.metric("bdSeq"), nb2.metric("bdSeq").Value)
		}
	})
	t.Run("operational-behavior-edge-node-intentional-disconnect-ndeath-and-packet", func(t *testing.T) {
		death := indexOf(lines, `^Received PUBLISH from mcpgw-edge1 \(d0, q1, r0, m\d+, '`+spTopic("NDEATH")+`'`, 0)
		disc := indexOf(lines, `^Received DISCONNECT from mcpgw-edge1`, 0)
		if death < 0 || disc < death {
			t.Fatalf("no NDEATH at QoS 1 before the DISCONNECT (%d, %d):\n%s", death, disc, strings.Join(lines, "\n"))
		}
	})
}

// TestSparkplugTCKMultipleBroker: two brokers; the node holds a session
// with one at a time, moves to the next when its broker dies (births
// there within 5 s, a new bdSeq), and never connects to the other while
// it has a session.
func TestSparkplugTCKMultipleBroker(t *testing.T) {
	requireSparkplugTools(t)
	a, b := newBroker(t), newBroker(t)
	a.start(t)
	b.start(t)
	defer a.kill()
	defer b.kill()
	ha, hb := startHost(t, a.port), startHost(t, b.port)
	startSpRig(t, fmt.Sprintf("brokers = [\"tcp://127.0.0.1:%d\", \"tcp://127.0.0.1:%d\"]", a.port, b.port), 100*time.Millisecond)

	nb := ha.expect(t, "NBIRTH on the first broker", isTopic("NBIRTH"))
	ha.expect(t, "DBIRTH on the first broker", isTopic("DBIRTH"))
	a.kill()
	died := time.Now()
	nb2 := hb.expect(t, "NBIRTH on the second broker", isTopic("NBIRTH"))
	took := time.Since(died)
	hb.expect(t, "DBIRTH on the second broker", isTopic("DBIRTH"))
	if took > 5*time.Second {
		t.Fatalf("births on the second broker %v after the first died, want within 5s", took)
	}
	if nb2.metric("bdSeq").number() != nb.metric("bdSeq").number()+1 {
		t.Fatalf("bdSeq %v on the second broker after %v", nb2.metric("bdSeq").Value, nb.metric("bdSeq").Value)
	}
	t.Logf("births on the second broker %v after the first died", took.Round(time.Millisecond))

	// The first comes back: the node stays where it is.
	a.start(t)
	ha = startHost(t, a.port)
	time.Sleep(3 * time.Second)
	if n := strings.Count(a.logText(), "as mcpgw-edge1"); n != 1 {
		t.Fatalf("the node connected to the first broker %d times while it had a session with the second, want once (before)", n)
	}
	// The second dies: back to the first.
	b.kill()
	nb3 := ha.expect(t, "NBIRTH on the first broker again", isTopic("NBIRTH"))
	if nb3.metric("bdSeq").number() != nb2.metric("bdSeq").number()+1 {
		t.Fatalf("bdSeq %v back on the first broker after %v", nb3.metric("bdSeq").Value, nb2.metric("bdSeq").Value)
	}
	if n := strings.Count(a.logText(), "as mcpgw-edge1"); n != 2 {
		t.Fatalf("the node connected to the first broker %d times, want twice (before, and after the second died)", n)
	}
	checkSeq(t, hb)
}

// TestSparkplugTCKPrimaryHost: with primary_host, no births before the
// host's STATE says online; a STATE of another host, or an online flag
// false, or an offline older than the last online, changes nothing; the
// host's death (its will: offline, not older) ends the session within
// 1 s with NDEATH and a disconnect, and the node then waits, its values
// kept, until the host is back; 2.2's STATE/<host> OFFLINE (legacy_state)
// ends it too.
func TestSparkplugTCKPrimaryHost(t *testing.T) {
	requireSparkplugTools(t)
	b := newBroker(t)
	b.start(t)
	defer b.kill()
	h := startHost(t, b.port) // watches, and sends STATE by hand
	r := startSpRig(t, fmt.Sprintf("brokers = [\"tcp://127.0.0.1:%d\"]\nprimary_host = \"scada1\"\nlegacy_state = true", b.port), 100*time.Millisecond)
	stamp := func() int64 { return time.Now().UnixMilli() }

	t.Run("message-flow-edge-node-birth-publish-phid-wait", func(t *testing.T) {
		h.none(t, "NBIRTH before the primary host said it is online", 3*time.Second, isTopic("NBIRTH"))
	})
	t.Run("message-flow-edge-node-birth-publish-phid-wait-id", func(t *testing.T) {
		h.raw(t, "spBv1.0/STATE/scada2", fmt.Sprintf(`{"online": true, "timestamp": %d}`, stamp()), true)
		h.none(t, "NBIRTH on another host's STATE", time.Second, isTopic("NBIRTH"))
	})
	t.Run("message-flow-edge-node-birth-publish-phid-wait-online", func(t *testing.T) {
		h.raw(t, "spBv1.0/STATE/scada1", fmt.Sprintf(`{"online": false, "timestamp": %d}`, stamp()), false)
		h.none(t, "NBIRTH on an offline STATE", time.Second, isTopic("NBIRTH"))
	})
	r.set(1) // read while waiting: goes out after the births, historical
	time.Sleep(300 * time.Millisecond)
	_, host := startHostProcess(t, b.port, "scada1")
	online := h.expect(t, "the primary host's STATE online", func(m hostMsg) bool {
		return m.Topic == "spBv1.0/STATE/scada1" && strings.Contains(m.State, `"online": true`)
	})
	var st struct {
		Online    bool  `json:"online"`
		Timestamp int64 `json:"timestamp"`
	}
	json.Unmarshal([]byte(online.State), &st)
	nb := h.expect(t, "NBIRTH once the primary host is online", isTopic("NBIRTH"))
	h.expect(t, "DBIRTH", isTopic("DBIRTH"))
	h.expect(t, "the value read while waiting, historical, after the births", func(m hostMsg) bool {
		return m.Topic == spTopic("DDATA") && len(m.Metrics) == 4 && m.Metrics[0].Historical && m.Metrics[0].number() == 1
	})

	t.Run("message-flow-edge-node-birth-publish-phid-wait-timestamp", func(t *testing.T) {
		h.raw(t, "spBv1.0/STATE/scada1", fmt.Sprintf(`{"online": false, "timestamp": %d}`, st.Timestamp-1), false)
		h.none(t, "NDEATH on an offline STATE older than the last online", 1500*time.Millisecond, isTopic("NDEATH"))
	})
	t.Run("message-flow-edge-node-birth-publish-phid-offline", func(t *testing.T) {
		host.Process.Signal(syscall.SIGKILL) // its will: offline, its online's timestamp
		host.Wait()
		off := h.expect(t, "the primary host's will", func(m hostMsg) bool {
			return m.Topic == "spBv1.0/STATE/scada1" && strings.Contains(m.State, `"online": false`) &&
				strings.Contains(m.State, fmt.Sprintf(`"timestamp": %d`, st.Timestamp))
		})
		death := h.expect(t, "NDEATH after the primary host went offline", isTopic("NDEATH"))
		if d := death.at.Sub(off.at); d > time.Second {
			t.Fatalf("NDEATH %v after the host's offline STATE, want within 1s", d)
		}
		if death.metric("bdSeq").number() != nb.metric("bdSeq").number() {
			t.Fatalf("NDEATH bdSeq %v, NBIRTH's %v", death.metric("bdSeq").Value, nb.metric("bdSeq").Value)
		}
		var lines []string
		for end := time.Now().Add(2 * time.Second); ; time.Sleep(20 * time.Millisecond) { // the DISCONNECT follows the NDEATH
			lines = brokerLines(b.logText())
			d := indexOf(lines, `^Received PUBLISH from mcpgw-edge1 .*'`+spTopic("NDEATH")+`'`, 0)
			if d >= 0 && indexOf(lines, `^Received DISCONNECT from mcpgw-edge1`, d) >= 0 {
				break
			}
			if time.Now().After(end) {
				t.Fatalf("no NDEATH then DISCONNECT in the broker's log:\n%s", strings.Join(lines, "\n"))
			}
		}
		// The session starts over, and waits: the host's STATE is offline.
		h.none(t, "NBIRTH while the primary host is offline", 2*time.Second, isTopic("NBIRTH"))
	})
	r.set(2)
	time.Sleep(300 * time.Millisecond)
	startHostProcess(t, b.port, "scada1")
	nb2 := h.expect(t, "NBIRTH once the primary host is back", isTopic("NBIRTH"))
	if nb2.metric("bdSeq").number() == nb.metric("bdSeq").number() {
		t.Fatalf("the same bdSeq %v in a new session", nb.metric("bdSeq").Value)
	}
	h.expect(t, "the value read while the host was away, historical", func(m hostMsg) bool {
		return m.Topic == spTopic("DDATA") && len(m.Metrics) == 4 && m.Metrics[0].Historical && m.Metrics[0].number() == 2
	})
	t.Run("legacy-state-offline", func(t *testing.T) {
		h.raw(t, "STATE/scada1", "OFFLINE", false)
		h.expect(t, "NDEATH on a Sparkplug 2.2 OFFLINE", isTopic("NDEATH"))
	})
	checkSeq(t, h)
}

// TestSparkplugStoreSurvivesKill: values read while the broker is away
// are kept on disk (mqtt.store) through a kill -9 of the gateway and its
// restart, and reach the host after the broker returns: every value the
// device held, in order per metric, flagged historical, none twice.
// The device's four counters step every 100 ms (the gateway polls every
// 10 ms, so it reads each step); they stand still around the kill, so
// every step is seen by one run of the gateway or the other.
func TestSparkplugStoreSurvivesKill(t *testing.T) {
	requireSparkplugTools(t)
	b := newBroker(t)
	b.persist = t.TempDir() // the host's subscription outlives the broker's stop
	b.start(t)
	defer b.kill()
	persistentHost = true
	h := startHost(t, b.port)
	persistentHost = false
	r := startSpRig(t, fmt.Sprintf("brokers = [\"tcp://127.0.0.1:%d\"]\nstore = %q", b.port, t.TempDir()), 10*time.Millisecond)
	h.expect(t, "NBIRTH", isTopic("NBIRTH"))
	h.expect(t, "DBIRTH", isTopic("DBIRTH"))

	var mu sync.Mutex
	step := uint16(0)
	tick := func(d time.Duration) {
		for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
			mu.Lock()
			step++
			r.set(step)
			mu.Unlock()
		}
		time.Sleep(300 * time.Millisecond) // the last step read
	}
	b.stop()
	tick(3 * time.Second)
	r.kill()
	r.start(t)
	for end := time.Now().Add(10 * time.Second); !strings.Contains(r.logs[1].String(), "Sparkplug store opened"); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatal("the gateway did not open its store after the restart")
		}
	}
	time.Sleep(500 * time.Millisecond) // polled again, unchanged
	tick(3 * time.Second)
	last := step
	b.start(t)
	back := h.expect(t, "NBIRTH after the broker came back", isTopic("NBIRTH"))
	if db := h.expect(t, "DBIRTH after the broker came back", isTopic("DBIRTH")); db.metric("c0").number() != float64(last) {
		t.Fatalf("DBIRTH c0 = %v, the device holds %d", db.metric("c0").Value, last)
	}
	h.expect(t, "the last step, historical", func(m hostMsg) bool {
		return m.Topic == spTopic("DDATA") && len(m.Metrics) > 0 && m.Metrics[0].Historical && m.Metrics[0].number() == float64(last)
	})
	// Every step from 1 to the last, once, in order, for each counter.
	got := map[uint64][]int{}
	h.mu.Lock()
	after := false
	for _, m := range h.msgs {
		after = after || m.Topic == back.Topic && m.Seq != nil && *m.Seq == 0 && m.Timestamp == back.Timestamp
		if !after || m.Topic != spTopic("DDATA") {
			continue
		}
		for _, x := range m.Metrics {
			if !x.Historical {
				t.Errorf("DDATA after the outage not flagged historical: %+v", x)
			}
			got[*x.Alias] = append(got[*x.Alias], int(x.number()))
		}
	}
	h.mu.Unlock()
	if len(got) != 4 {
		t.Fatalf("values of %d metrics, want 4", len(got))
	}
	for alias, vs := range got {
		if len(vs) != int(last) {
			t.Fatalf("metric %d: %d values after the outage, want %d (1..%d): %v", alias, len(vs), last, last, vs)
		}
		for i, v := range vs {
			if v != i+1 {
				t.Fatalf("metric %d: value %d is %d, want %d: %v", alias, i, v, i+1, vs)
			}
		}
	}
	checkSeq(t, h)
	t.Logf("%d steps of 4 counters through a broker outage and a kill -9, all delivered in order", last)
}
