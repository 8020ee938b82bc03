package config

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

const shippedExample = `
[server]
listen = "127.0.0.1:5020"
max_conns = 1000
idle_timeout = "60s"

[log]
level = "info"
format = "text"
file = ""

[[bus]]
name = "line1"
port = "/dev/ttyUSB0"
baud = 19200
data_bits = 8
parity = "E"
stop_bits = 1
timeout = "500ms"
retries = 1
units = ["1-247"]
`

func TestShippedExample(t *testing.T) {
	c, err := Parse(shippedExample)
	if err != nil {
		t.Fatal(err)
	}
	b := c.Bus[0]
	if len(b.UnitIDs) != 247 || b.UnitIDs[0] != 1 || b.UnitIDs[246] != 247 {
		t.Fatalf("units: %d ids", len(b.UnitIDs))
	}
	if b.Timeout.Duration != 500*time.Millisecond || *b.Retries != 1 || b.DataBits != 8 || b.Parity != "E" || b.StopBits != 1 {
		t.Fatalf("bus: %+v", b)
	}
	if c.Server.IdleTimeout.Duration != time.Minute || c.Server.MaxConns != 1000 {
		t.Fatalf("server: %+v", c.Server)
	}
}

func TestShippedConfigLoads(t *testing.T) {
	c, err := Load(filepath.Join("..", "..", "config.toml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Bus) == 0 {
		t.Fatal("shipped config.toml has no bus")
	}
}

func TestDefaultsAndOverrides(t *testing.T) {
	c, err := Parse(`
[[bus]]
name = "a"
port = "/dev/ttyS0"
units = ["1", "5-7"]
[[bus.device]]
unit = 5
timeout = "2s"
retries = 0
`)
	if err != nil {
		t.Fatal(err)
	}
	b := c.Bus[0]
	if c.Server.Listen != "127.0.0.1:5020" || c.Log.Level != "info" || c.Log.Format != "text" {
		t.Fatalf("defaults: %+v %+v", c.Server, c.Log)
	}
	if b.Baud != 19200 || b.Parity != "E" || b.DataBits != 8 || b.StopBits != 1 || !*b.Broadcast {
		t.Fatalf("serial defaults: %+v", b)
	}
	if string(b.UnitIDs) != "\x01\x05\x06\x07" {
		t.Fatalf("units % X", b.UnitIDs)
	}
	if d := b.Device[0]; d.Timeout.Duration != 2*time.Second || *d.Retries != 0 {
		t.Fatalf("device override: %+v", d)
	}
	if *b.OfflineAfter != 3 || b.ProbeInterval.Duration != 5*time.Second || len(c.Server.PriorityNets) != 0 {
		t.Fatalf("offline and priority defaults: %d %v %v", *b.OfflineAfter, b.ProbeInterval, c.Server.PriorityNets)
	}
}

func TestOfflineAndPriorityKeys(t *testing.T) {
	c, err := Parse(`
[server]
priority_clients = ["10.0.0.5/32", "192.168.7.9", "10.1.2.3/16"]
[[bus]]
name = "a"
port = "/dev/ttyS0"
units = ["1-9"]
offline_after = 0
probe_interval = "2s"
[[bus.device]]
unit = 4
offline_after = 5
probe_interval = "30s"
`)
	if err != nil {
		t.Fatal(err)
	}
	var nets []string
	for _, n := range c.Server.PriorityNets {
		nets = append(nets, n.String())
	}
	if strings.Join(nets, " ") != "10.0.0.5/32 192.168.7.9/32 10.1.0.0/16" {
		t.Fatalf("priority_clients: %v", nets)
	}
	b := c.Bus[0]
	if *b.OfflineAfter != 0 || b.ProbeInterval.Duration != 2*time.Second {
		t.Fatalf("bus: offline_after %d probe_interval %v", *b.OfflineAfter, b.ProbeInterval)
	}
	if d := b.Device[0]; *d.OfflineAfter != 5 || d.ProbeInterval.Duration != 30*time.Second {
		t.Fatalf("device: %+v", d)
	}
}

func TestAccessKeys(t *testing.T) {
	c, err := Parse(`
[server]
allow = ["10.0.0.0/8", "192.168.7.9"]
max_conns_per_ip = 4
rate_limit = 20
[[bus]]
name = "a"
port = "/dev/ttyS0"
units = ["1-9"]
[[access]]
roles = ["operator"]
sources = ["10.1.0.0/16"]
units = ["1-3", "7"]
allow = "read-write"
[[access]]
allow = "read"
`)
	if err != nil {
		t.Fatal(err)
	}
	s := c.Server
	if len(s.AllowNets) != 2 || s.AllowNets[1].String() != "192.168.7.9/32" || s.MaxConnsPerIP != 4 || s.RateLimit != 20 {
		t.Fatalf("server: %+v", s)
	}
	if len(c.Access) != 2 {
		t.Fatalf("%d rules", len(c.Access))
	}
	r := c.Access[0]
	if r.Roles[0] != "operator" || r.SourceNets[0].String() != "10.1.0.0/16" || string(r.UnitIDs) != "\x01\x02\x03\x07" || r.Allow != AllowReadWrite {
		t.Fatalf("rule 1: %+v", r)
	}
	if r := c.Access[1]; r.Roles != nil || r.SourceNets != nil || r.UnitIDs != nil || r.Allow != AllowRead {
		t.Fatalf("rule 2: %+v", r)
	}
	c, err = Parse("[[bus]]\nname = \"a\"\nport = \"/dev/x\"\nunits = [\"1\"]\n")
	if err != nil || len(c.Access) != 0 {
		t.Fatalf("no [[access]]: %v", err)
	}
	// Limits that hold without tuning; 0 written out lifts them.
	if c.Server.MaxConnsPerIP != DefaultMaxConnsPerIP || c.Metrics.MaxStreams != DefaultMaxStreams || c.Metrics.MaxStreamsPerIP != DefaultMaxStreamsPerIP {
		t.Fatalf("defaults: max_conns_per_ip %d, max_streams %d, max_streams_per_ip %d", c.Server.MaxConnsPerIP, c.Metrics.MaxStreams, c.Metrics.MaxStreamsPerIP)
	}
	c, err = Parse("[server]\nmax_conns_per_ip = 0\n[metrics]\nmax_streams = 0\nmax_streams_per_ip = 0\n[[bus]]\nname = \"a\"\nport = \"/dev/x\"\nunits = [\"1\"]\n")
	if err != nil || c.Server.MaxConnsPerIP != 0 || c.Metrics.MaxStreams != 0 || c.Metrics.MaxStreamsPerIP != 0 {
		t.Fatalf("limits lifted: %v %+v %+v", err, c.Server, c.Metrics)
	}
}

// TestSourcesAsClientsAre: networks are matched as clients' addresses
// are (IPv4 as IPv4, even on an IPv6 socket), so an IPv4-mapped network
// is its IPv4 network, and an IPv6 one stays IPv6.
func TestSourcesAsClientsAre(t *testing.T) {
	for in, want := range map[string]string{
		"::ffff:127.0.0.1":       "127.0.0.1/32",
		"::ffff:10.0.0.0/104":    "10.0.0.0/8",
		"::ffff:0.0.0.0/96":      "0.0.0.0/0",
		"10.1.2.3":               "10.1.2.3/32",
		"10.1.2.3/16":            "10.1.0.0/16",
		"2001:db8::/32":          "2001:db8::/32",
		"::1":                    "::1/128",
		"fe80::1234/64":          "fe80::/64",
		"::ffff:192.168.7.9/128": "192.168.7.9/32",
	} {
		p, err := ParseNet(in)
		if err != nil || p.String() != want {
			t.Errorf("ParseNet(%q) = %v, %v; want %s", in, p, err, want)
		}
	}
}

// TestTLSOnly: an empty server.listen turns the plain listener off when
// TLS listens; left out, it takes its default.
func TestTLSOnly(t *testing.T) {
	bus := "[[bus]]\nname = \"a\"\nport = \"/dev/x\"\nunits = [\"1\"]\n"
	tls := "[server.tls]\nlisten = \"0.0.0.0:802\"\ncert = \"s.crt\"\nkey = \"s.key\"\nclient_ca = \"ca.crt\"\n"
	c, err := Parse("[server]\nlisten = \"\"\n" + tls + bus)
	if err != nil || c.Server.Listen != "" || c.Server.TLS.ClientCA != "ca.crt" {
		t.Fatalf("TLS only: %+v, %v", c.Server, err)
	}
	if c, err = Parse(tls + bus); err != nil || c.Server.Listen != "127.0.0.1:5020" {
		t.Fatalf("no listen key: %q, %v", c.Server.Listen, err)
	}
}

// TestUnitsAsWritten: unit ids as numbers and range strings, mixed, on
// lines and in access rules.
func TestUnitsAsWritten(t *testing.T) {
	c, err := Parse("[[bus]]\nname = \"a\"\nport = \"/dev/x\"\nunits = [1, 2, \"5-8\", 20]\n[[access]]\nunits = [3, \"9-10\"]\nallow = \"read\"\n")
	if err != nil {
		t.Fatal(err)
	}
	if got := string(c.Bus[0].UnitIDs); got != "\x01\x02\x05\x06\x07\x08\x14" {
		t.Fatalf("bus units % X", got)
	}
	if got := string(c.Access[0].UnitIDs); got != "\x03\x09\x0a" {
		t.Fatalf("access units % X", got)
	}
	for _, bad := range []struct{ units, want string }{
		{`[1.5]`, "1.5: want a unit id"},
		{`[true]`, "true: want a unit id"},
		{`"1-3"`, "want a list of unit ids"},
		{`[0]`, "unit ids run from 1 to 247"},
		{`[248]`, "unit ids run from 1 to 247"},
	} {
		_, err := Parse("[[bus]]\nname = \"a\"\nport = \"/dev/x\"\nunits = " + bad.units + "\n")
		if err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("units = %s: %v, want %q", bad.units, err, bad.want)
		}
	}
}

func TestGapsTakeEffect(t *testing.T) {
	c, err := Parse("[[bus]]\nname = \"a\"\nport = \"/dev/x\"\nunits = [\"1\"]\nchar_gap = \"750us\"\nframe_gap = \"1750us\"\n")
	if err != nil {
		t.Fatal(err)
	}
	if b := c.Bus[0]; b.CharGap.Duration != 750*time.Microsecond || b.FrameGap.Duration != 1750*time.Microsecond {
		t.Fatalf("gaps %v %v", b.CharGap, b.FrameGap)
	}
}

func TestCacheAndPolls(t *testing.T) {
	c, err := Parse(`
[[bus]]
name = "a"
port = "/dev/ttyS0"
units = [1, 2, 3]
cache_max_age = "500ms"
shared_reads = false
[[bus.device]]
unit = 3
cache_max_age = "2s"
cache_serve_stale = true
[[bus.poll]]
unit = 1
function = 3
address = 0
count = 50
interval = "1s"
`)
	if err != nil {
		t.Fatal(err)
	}
	b := &c.Bus[0]
	if *b.SharedReads || len(b.Poll) != 1 || b.Poll[0].Count != 50 || b.Poll[0].Interval.Duration != time.Second {
		t.Fatalf("bus %+v", b)
	}
	for _, tc := range []struct {
		unit  byte
		age   time.Duration
		stale bool
	}{{1, 500 * time.Millisecond, false}, {3, 2 * time.Second, true}} {
		if age, stale := b.Cache(tc.unit); age != tc.age || stale != tc.stale {
			t.Errorf("unit %d: cache %v %v, want %v %v", tc.unit, age, stale, tc.age, tc.stale)
		}
	}
	c, _ = Parse("[[bus]]\nname = \"a\"\nport = \"/dev/x\"\nunits = [1]\n")
	if b := c.Bus[0]; !*b.SharedReads || b.CacheMaxAge.Duration != 0 {
		t.Fatalf("defaults: shared_reads %v, cache_max_age %v; want on and off", *b.SharedReads, b.CacheMaxAge)
	}
}

func TestErrorsNameTheKey(t *testing.T) {
	base := "[[bus]]\nname = \"l1\"\nport = \"/dev/x\"\nunits = [\"1-3\"]\n"
	tests := []struct{ name, text, want string }{
		{"unknown key", base + "prity = \"E\"\n", "unknown key bus.prity"},
		{"bad parity", base + "parity = \"X\"\n", `bus "l1": parity "X"`},
		{"bad duration", base + "timeout = \"fast\"\n", `"fast" is not a duration`},
		{"unit 0", "[[bus]]\nname = \"l1\"\nport = \"/dev/x\"\nunits = [\"0-3\"]\n", "unit ids run from 1 to 247"},
		{"unit range", "[[bus]]\nname = \"l1\"\nport = \"/dev/x\"\nunits = [\"5-3\"]\n", `"5-3": want a unit id or a range`},
		{"no units", "[[bus]]\nname = \"l1\"\nport = \"/dev/x\"\n", `bus "l1": units: required`},
		{"no port", "[[bus]]\nname = \"l1\"\nunits = [\"1\"]\n", "port: required"},
		{"no bus", "[server]\n", "no [[bus]] table"},
		{"unit on two lines", base + "[[bus]]\nname = \"l2\"\nport = \"/dev/y\"\nunits = [\"3\"]\n", `unit 3 is already served by bus "l1"`},
		{"same name", base + "[[bus]]\nname = \"l1\"\nport = \"/dev/y\"\nunits = [\"9\"]\n", "same name"},
		{"baud", base + "baud = -1\n", "baud -1"},
		{"retries", base + "retries = 99\n", "retries 99: must be 0..10"},
		{"device not on line", base + "[[bus.device]]\nunit = 9\n", "device[0]: unit 9"},
		{"log level", "[log]\nlevel = \"loud\"\n" + base, `log.level "loud"`},
		{"listen", "[server]\nlisten = \"5020\"\n" + base, `server.listen "5020"`},
		{"syntax", "[[bus]\n", "line 2: expected end of table array"},
		{"priority client", "[server]\npriority_clients = [\"10.0.0/8\"]\n" + base, `server.priority_clients: "10.0.0/8"`},
		{"offline_after", base + "offline_after = -1\n", `bus "l1": offline_after -1`},
		{"probe_interval", base + "probe_interval = \"-1s\"\n", `bus "l1": probe_interval -1s`},
		{"device offline_after", base + "[[bus.device]]\nunit = 2\noffline_after = -2\n", "device[0]: offline_after -2"},
		{"server allow", "[server]\nallow = [\"10.0.0.0/33\"]\n" + base, `server.allow: "10.0.0.0/33"`},
		{"max_conns_per_ip", "[server]\nmax_conns_per_ip = -1\n" + base, "server.max_conns_per_ip -1"},
		{"rate_limit", "[server]\nrate_limit = -5\n" + base, "server.rate_limit -5"},
		{"access allow missing", base + "[[access]]\nunits = [\"1\"]\n", "[[access]] table 1: allow: missing"},
		{"access allow value", base + "[[access]]\nallow = \"read\"\n[[access]]\nallow = \"rw\"\n", `[[access]] table 2: allow "rw": must be "read", "read-write" or "none"`},
		{"access source", base + "[[access]]\nsources = [\"10.1.0.0/16\", \"10.2\"]\nallow = \"read\"\n", `[[access]] table 1: sources: "10.2"`},
		{"access units", base + "[[access]]\nunits = [\"1-300\"]\nallow = \"read\"\n", "[[access]] table 1: units:"},
		{"access role", base + "[[access]]\nroles = [\"\"]\nallow = \"read\"\n", "[[access]] table 1: roles: an empty role"},
		{"access key", base + "[[access]]\nallow = \"read\"\nrole = [\"x\"]\n", "unknown key access.role"},
		{"tls without cert", "[server.tls]\nlisten = \"0.0.0.0:802\"\nkey = \"k\"\nclient_ca = \"c\"\n" + base, "server.tls.cert: required"},
		{"tls without client_ca", "[server.tls]\nlisten = \"0.0.0.0:802\"\ncert = \"c\"\nkey = \"k\"\n" + base, "server.tls.client_ca: required"},
		{"tls listen", "[server.tls]\nlisten = \"802\"\ncert = \"c\"\nkey = \"k\"\nclient_ca = \"a\"\n" + base, `server.tls.listen "802"`},
		{"no listener", "[server]\nlisten = \"\"\n" + base, "would listen nowhere"},
		{"unit_map syntax", base + "unit_map = [\"1-3\"]\n", `unit_map "1-3": want`},
		{"unit_map outside units", base + "unit_map = [\"1-4:10\"]\n", "unit_map \"1-4:10\": unit 4 is not in units"},
		{"unit_map past 247", base + "unit_map = [\"3:247\", \"2:248\"]\n", "unit 2 would be 248 on the line"},
		{"unit_map twice", base + "unit_map = [\"1:10\", \"1:11\"]\n", "unit 1 is mapped twice"},
		{"max_registers", base + "[[bus.device]]\nunit = 2\nmax_registers = 126\n", `bus "l1": device[0]: max_registers 126: must be 1..125`},
		{"max_registers 0", base + "max_registers = 0\n", `bus "l1": max_registers 0: must be 1..125`},
		{"max_bits", base + "max_bits = 2001\n", "max_bits 2001: must be 1..2000"},
		{"single_register_write", base + "[[bus.device]]\nunit = 2\nsingle_register_write = \"fc3\"\n", `device[0]: single_register_write "fc3": want "fc16"`},
		{"single_coil_write", base + "single_coil_write = \"fc16\"\n", `single_coil_write "fc16": want "fc15"`},
		{"device frame_gap", base + "[[bus.device]]\nunit = 2\nframe_gap = \"-1ms\"\n", "device[0]: frame_gap -1ms"},
		{"rs485 on a network line", "[[bus]]\nname = \"n\"\nport = \"tcp://10.0.0.1:4001\"\nunits = [1]\nrs485 = true\n", "rs485: only on a serial port"},
		{"rts_on_send", base + "rs485 = true\nrts_on_send = \"up\"\n", `rts_on_send "up": want "high" or "low"`},
		{"rts_on_send without rs485", base + "rts_on_send = \"low\"\n", "rts_on_send: only with rs485 = true"},
		{"rts delay without rs485", base + "rts_delay_after = \"2ms\"\n", "rts_delay_after: only with rs485 = true"},
		{"connect_delay on a serial port", base + "connect_delay = \"1s\"\n", "connect_delay: only on a network line"},
		{"self_unit routed", "[server]\nself_unit = 2\n" + base, `server.self_unit 2: unit 2 is served by bus "l1"`},
		{"self_unit range", "[server]\nself_unit = 256\n" + base, "server.self_unit 256: must be 1..255"},
		{"unit_map to one device", base + "unit_map = [\"3:1\"]\n", "units 1 and 3 both reach unit 1 on the line"},
		{"slave_line forward", base + "[[slave_line]]\nname = \"hmi\"\nport = \"/dev/y\"\nunits = [1]\n", `slave_line "hmi": forward: required`},
		{"slave_line forward line", base + "[[slave_line]]\nname = \"hmi\"\nport = \"/dev/y\"\nunits = [1]\nforward = \"l9\"\n", `forward "l9": no [[bus]] of that name`},
		{"slave_line unit not on the line", base + "[[slave_line]]\nname = \"hmi\"\nport = \"/dev/y\"\nunits = [7]\nforward = \"l1\"\n", `unit 7 is not served by bus "l1"`},
		{"slave_line on a Modbus TCP port", base + "[[slave_line]]\nport = \"modbus+tcp://10.0.0.40:502\"\nunits = [1]\nforward = \"l1\"\n", `slave_line "slave_line1": port "modbus+tcp://10.0.0.40:502": a slave line is a serial line`},
		{"slave_line forward unit taken", base + "[[slave_line]]\nname = \"hmi\"\nport = \"/dev/y\"\nunits = [2]\nforward = \"modbus+tcp://10.0.0.40:502\"\n", `unit 2 is already served by bus "l1"`},
		{"tcp port", strings.Replace(base, `"/dev/x"`, `"tcp://10.0.0.20"`, 1), `port "tcp://10.0.0.20": want tcp://host:port`},
		{"unknown scheme", strings.Replace(base, `"/dev/x"`, `"udp://10.0.0.20:4001"`, 1), `udp:// is not a kind of line`},
		{"cache_max_age", base + "cache_max_age = \"-1s\"\n", `bus "l1": cache_max_age -1s`},
		{"device cache_max_age", base + "[[bus.device]]\nunit = 2\ncache_max_age = \"-2s\"\n", "device[0]: cache_max_age -2s"},
		{"poll unit", base + "[[bus.poll]]\nunit = 9\nfunction = 3\ncount = 1\ninterval = \"1s\"\n", `bus "l1": poll[0]: unit 9`},
		{"poll function", base + "[[bus.poll]]\nunit = 1\nfunction = 6\ncount = 1\ninterval = \"1s\"\n", "poll[0]: function 6"},
		{"poll count", base + "[[bus.poll]]\nunit = 1\nfunction = 3\ncount = 126\ninterval = \"1s\"\n", "poll[0]: count 126: must be 1..125"},
		{"poll range", base + "[[bus.poll]]\nunit = 1\nfunction = 1\naddress = 65000\ncount = 2000\ninterval = \"1s\"\n", "poll[0]: address 65000 with count 2000"},
		{"poll interval", base + "[[bus.poll]]\nunit = 1\nfunction = 3\ncount = 1\n", "poll[0]: interval 0s: required"},
		{"two lines on one port", base + "[[bus]]\nname = \"l2\"\nport = \"/dev/./x\"\nunits = [\"101\"]\nunit_map = [\"101:1\"]\n", `bus "l2": port "/dev/./x": already the port of bus "l1"`},
		{"two lines on one device server", strings.Replace(base, `"/dev/x"`, `"tcp://gw.plant:4001"`, 1) + "[[bus]]\nname = \"l2\"\nport = \"tcp://GW.plant:4001\"\nunits = [\"9\"]\n", `bus "l2": port "tcp://GW.plant:4001": already the port of bus "l1"`},
		{"a slave line on a line's port", base + "[[slave_line]]\nname = \"hmi\"\nport = \"/dev/x\"\nunits = [1]\nforward = \"l1\"\n", `slave_line "hmi": port "/dev/x": already the port of bus "l1"`},
		{"access source mapped, short", base + "[[access]]\nsources = [\"::ffff:10.0.0.0/80\"]\nallow = \"read\"\n", "spans IPv6 addresses too"},
		{"access source with a zone", base + "[[access]]\nsources = [\"fe80::1%eth0\"]\nallow = \"read\"\n", "without a zone"},
		{"max_streams", "[metrics]\nmax_streams = -1\n" + base, "metrics.max_streams -1"},
		{"broker and brokers", "[mqtt]\nbroker = \"tcp://a:1883\"\nbrokers = [\"tcp://b:1883\"]\ngroup = \"g\"\nnode = \"n\"\n" + base, "mqtt.broker and mqtt.brokers: give one"},
		{"brokers scheme", "[mqtt]\nbrokers = [\"tcp://a:1883\", \"ws://b:80\"]\ngroup = \"g\"\nnode = \"n\"\n" + base, `mqtt.brokers: "ws://b:80"`},
		{"legacy_state alone", "[mqtt]\nbrokers = [\"tcp://a:1883\"]\ngroup = \"g\"\nnode = \"n\"\nlegacy_state = true\n" + base, "mqtt.legacy_state: needs mqtt.primary_host"},
		{"primary_host", "[mqtt]\nbrokers = [\"tcp://a:1883\"]\ngroup = \"g\"\nnode = \"n\"\nprimary_host = \"a/b\"\n" + base, `mqtt.primary_host "a/b"`},
		{"store missing", "[mqtt]\nbrokers = [\"tcp://a:1883\"]\ngroup = \"g\"\nnode = \"n\"\nstore = \"/nonexistent/spool\"\n" + base, "mqtt.store: stat /nonexistent/spool: no such file or directory (create it"},
		{"store a file", "[mqtt]\nbrokers = [\"tcp://a:1883\"]\ngroup = \"g\"\nnode = \"n\"\nstore = \"/etc/hostname\"\n" + base, "mqtt.store: /etc/hostname: not a directory"},
		{"store_max_mb", "[mqtt]\nbrokers = [\"tcp://a:1883\"]\ngroup = \"g\"\nnode = \"n\"\nstore_max_mb = -1\n" + base, "mqtt.store_max_mb -1"},
		{"web_config unreadable", "[metrics]\nlisten = \"127.0.0.1:0\"\nweb_config = \"/nonexistent/web.yml\"\n" + base, "metrics.web_config: open /nonexistent/web.yml"},
		{"web_config without listen", "[metrics]\nweb_config = \"/etc/hostname\"\n" + base, "metrics.web_config: needs metrics.listen"},
		{"web_config bad hash", "[metrics]\nlisten = \"127.0.0.1:0\"\nweb_config = " + strconv.Quote(webConfig(t, "basic_auth_users:\n  alice: notahash\n")) + "\n" + base, "basic_auth_users: alice: the password is not a bcrypt hash"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(tt.text)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

// TestPollValues: a poll's named values get their defaults, and each
// mistake is named with the value and the key.
func TestPollValues(t *testing.T) {
	poll := func(function int, values string) string {
		return fmt.Sprintf("[[bus]]\nname = \"l1\"\nport = \"/dev/x\"\nunits = [1]\n[[bus.poll]]\nunit = 1\nfunction = %d\naddress = 0\ncount = 4\ninterval = \"1s\"\n%s", function, values)
	}
	value := func(kv string) string { return "[[bus.poll.value]]\n" + kv + "\n" }
	c, err := Parse(poll(3, value("name = \"flow\"\ntype = \"float32\"\norder = \"cdab\"\nwritable = true")+value("name = \"alarm\"\ntype = \"bool\"\noffset = 2\nbit = 15")+value("name = \"tag\"\ntype = \"string\"\noffset = 3\nlength = 1\nscale = 2.0")))
	if err != nil {
		t.Fatal(err)
	}
	v := c.Bus[0].Poll[0].Value
	if v[0].Order != "CDAB" || *v[0].Scale != 1 || v[1].Order != "ABCD" || *v[2].Scale != 2 {
		t.Fatalf("values: %+v", v)
	}
	for _, tc := range []struct{ name, text, want string }{
		{"no name", poll(3, value("type = \"uint16\"")), "value[0]: name: required"},
		{"no type", poll(3, value("name = \"a\"")), `value "a": type: required`},
		{"bad type", poll(3, value("name = \"a\"\ntype = \"int8\"")), `value "a": type "int8": want bool`},
		{"number in bits", poll(1, value("name = \"a\"\ntype = \"uint16\"")), "a poll of bits (function 1) holds bool values only"},
		{"string without length", poll(3, value("name = \"a\"\ntype = \"string\"")), `value "a": length: required for a string`},
		{"bit 16", poll(3, value("name = \"a\"\ntype = \"bool\"\nbit = 16")), `value "a": bit 16: 0..15`},
		{"bit in bits", poll(2, value("name = \"a\"\ntype = \"bool\"\nbit = 1")), `value "a": bit 1: not for a poll of bits (function 2)`},
		{"past the block", poll(3, value("name = \"a\"\ntype = \"float64\"\noffset = 1")), `value "a": offset 1: the value must lie within the poll's 4 registers`},
		{"bad order", poll(3, value("name = \"a\"\ntype = \"int32\"\norder = \"ACBD\"")), `value "a": order "ACBD"`},
		{"scale 0", poll(3, value("name = \"a\"\ntype = \"int16\"\nscale = 0.0")), `value "a": scale 0`},
		{"writable input", poll(4, value("name = \"a\"\ntype = \"int16\"\nwritable = true")), `value "a": writable: only values of holding registers`},
		{"writable bool", poll(3, value("name = \"a\"\ntype = \"bool\"\nwritable = true")), `value "a": writable: a bool in a register cannot be written`},
		{"negative deadband", poll(3, value("name = \"a\"\ntype = \"int16\"\ndeadband = -1.0")), `value "a": deadband -1`},
		{"two of a name", poll(3, value("name = \"a\"\ntype = \"int16\"")+value("name = \"a\"\ntype = \"int16\"\noffset = 1")), `value[1]: name "a": another value of this poll has it`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(tc.text)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

// webConfig writes a web configuration file.
func webConfig(t *testing.T, text string) string {
	p := filepath.Join(t.TempDir(), "web.yml")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestMQTTKeys: one broker is a list of one; the store's default size.
func TestMQTTKeys(t *testing.T) {
	c, err := Parse("[mqtt]\nbroker = \"tcp://a:1883\"\ngroup = \"g\"\nnode = \"n\"\nstore = " + strconv.Quote(t.TempDir()) + "\n[[bus]]\nname = \"l1\"\nport = \"/dev/x\"\nunits = [1]\n")
	if err != nil {
		t.Fatal(err)
	}
	if !c.MQTT.On() || len(c.MQTT.Brokers) != 1 || c.MQTT.Brokers[0] != "tcp://a:1883" || c.MQTT.StoreMaxMB != 256 {
		t.Fatalf("mqtt: %+v", c.MQTT)
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope.toml"))
	if err == nil || !os.IsNotExist(errorsUnwrapAll(err)) {
		t.Fatalf("err = %v", err)
	}
}

func errorsUnwrapAll(err error) error {
	for {
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return err
		}
		err = u.Unwrap()
	}
}

// TestSamePortThroughALink: /dev/serial/by-id/... and the device it
// links to are one port.
func TestSamePortThroughALink(t *testing.T) {
	dir := t.TempDir()
	dev, link := filepath.Join(dir, "ttyUSB0"), filepath.Join(dir, "usb-FTDI_FT232R-if00-port0")
	if err := os.WriteFile(dev, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(dev, link); err != nil {
		t.Fatal(err)
	}
	_, err := Parse(fmt.Sprintf("[[bus]]\nname = \"a\"\nport = %q\nunits = [\"1\"]\n[[bus]]\nname = \"b\"\nport = %q\nunits = [\"2\"]\n", dev, link))
	if err == nil || !strings.Contains(err.Error(), `bus "b": port`) || !strings.Contains(err.Error(), `already the port of bus "a"`) {
		t.Fatalf("error %v", err)
	}
}
