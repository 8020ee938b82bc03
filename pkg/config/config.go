// Package config reads mcpgw's config.toml: it applies defaults, rejects
// unknown keys, and checks every value, naming the key at fault, so that
// the gateway never starts half-configured.
package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// UnitList is a list of unit ids as people write them: numbers and "a-b"
// ranges, mixed ([1, 2, "5-8"]); ParseUnits reads them.
type UnitList []string

func (u *UnitList) UnmarshalTOML(v any) error {
	items, ok := v.([]any)
	if !ok {
		return fmt.Errorf("units: want a list of unit ids and ranges, such as [1, 2, \"5-8\"]")
	}
	*u = (*u)[:0]
	for _, it := range items {
		switch x := it.(type) {
		case int64:
			*u = append(*u, strconv.FormatInt(x, 10))
		case string:
			*u = append(*u, x)
		default:
			return fmt.Errorf("units: %v: want a unit id (a number) or a range such as \"5-8\"", it)
		}
	}
	return nil
}

// Duration is a time.Duration written as a string: "500ms", "2s".
type Duration struct{ time.Duration }

func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("%q is not a duration (write it like \"500ms\" or \"2s\")", b)
	}
	d.Duration = v
	return nil
}

// Config is the whole file.
type Config struct {
	Server  Server   `toml:"server"`
	Metrics Metrics  `toml:"metrics"`
	Log     Log      `toml:"log"`
	Bus     []Bus    `toml:"bus"`
	Access  []Access `toml:"access"`
	MQTT    MQTT     `toml:"mqtt"`
	// The gateway in reverse: serial lines where it is a slave.
	SlaveLine []SlaveLine `toml:"slave_line"`
}

// Metrics is the listener for Prometheus (/metrics), health checks
// (/healthz, /readyz) and the status page.
type Metrics struct {
	Listen          string `toml:"listen"`             // host:port, such as "127.0.0.1:9502"; empty: off
	Pprof           bool   `toml:"pprof"`              // serve net/http/pprof there too
	MaxStreams      int    `toml:"max_streams"`        // the status page's live streams (/events) at once: default 64; 0 (written out): no cap
	MaxStreamsPerIP int    `toml:"max_streams_per_ip"` // of them from one address: default 8; 0 (written out): no cap
	WebConfig       string `toml:"web_config"`         // a Prometheus web configuration file (TLS, basic auth) for everything on listen
}

// Defaults of the keys whose 0 means something of its own.
const (
	DefaultMaxConnsPerIP   = 64 // of max_conns' 1000: room for others
	DefaultMaxStreams      = 64
	DefaultMaxStreamsPerIP = 8
)

// TLS is the Modbus/TCP Security listener: TLS 1.2 or later, a client
// certificate that chains to ClientCA required.
type TLS struct {
	Listen   string `toml:"listen"`    // host:port, conventionally port 802; empty: no TLS listener
	Cert     string `toml:"cert"`      // PEM, chain included
	Key      string `toml:"key"`       // PEM
	ClientCA string `toml:"client_ca"` // PEM: the CA(s) client certificates must chain to
}

// Access is one [[access]] table: who may do what, first match wins (see
// pkg/chain/access).
type Access struct {
	Roles   []string `toml:"roles"`   // Modbus/TCP Security roles; absent: any client
	Sources []string `toml:"sources"` // client networks; absent: any
	Units   UnitList `toml:"units"`   // absent: any unit
	Allow   string   `toml:"allow"`   // "read", "read-write" or "none"; required

	SourceNets []netip.Prefix `toml:"-"` // Sources, parsed
	UnitIDs    []byte         `toml:"-"` // Units, parsed
}

// Allow levels, as [[access]] allow writes them.
const (
	AllowNone      = "none"
	AllowRead      = "read"
	AllowReadWrite = "read-write"
)

// Server is the Modbus TCP side.
type Server struct {
	Listen          string   `toml:"listen"` // default 127.0.0.1:5020; "" (written out): no plain listener
	TLS             TLS      `toml:"tls"`
	RTUListen       string   `toml:"rtu_listen"`       // host:port for RTU over TCP clients; empty: none
	MaxConns        int      `toml:"max_conns"`        // default 1000
	IdleTimeout     Duration `toml:"idle_timeout"`     // default 60s
	PriorityClients []string `toml:"priority_clients"` // networks whose requests go before plain reads
	Allow           []string `toml:"allow"`            // client networks that may connect; absent: any
	MaxConnsPerIP   int      `toml:"max_conns_per_ip"` // connections from one address at most: default 64; 0 (written out): no cap
	RateLimit       float64  `toml:"rate_limit"`       // requests per second per client address; 0: no limit
	SelfUnit        int      `toml:"self_unit"`        // the unit id the gateway answers itself, from its own state: 0 (default): none; 255 by convention

	PriorityNets []netip.Prefix `toml:"-"` // PriorityClients, parsed
	AllowNets    []netip.Prefix `toml:"-"` // Allow, parsed
}

// Log is where and how the transaction log goes.
type Log struct {
	Level  string `toml:"level"`  // debug, info (default), warn, error
	Format string `toml:"format"` // text (default) or json
	File   string `toml:"file"`   // empty: standard error
}

// Bus is one serial line.
type Bus struct {
	Name           string   `toml:"name"`
	Port           string   `toml:"port"`
	Mode           string   `toml:"mode"`      // rtu (default) or ascii
	Baud           int      `toml:"baud"`      // default 19200
	DataBits       int      `toml:"data_bits"` // default 8
	Parity         string   `toml:"parity"`    // N, E (default) or O
	StopBits       int      `toml:"stop_bits"` // default 1
	Timeout        Duration `toml:"timeout"`   // default 500ms
	Retries        *int     `toml:"retries"`   // default 1
	Units          UnitList `toml:"units"`     // required
	UnitMap        []string `toml:"unit_map"`  // "101-110:1": clients' units 101..110 are the line's 1..10
	Broadcast      *bool    `toml:"broadcast"` // send unit 0 here: default true
	BroadcastDelay Duration `toml:"broadcast_delay"`
	FrameGap       Duration `toml:"frame_gap"`
	CharGap        Duration `toml:"char_gap"`
	Echo           bool     `toml:"echo"`
	QueueSize      int      `toml:"queue_size"`
	QueueTimeout   Duration `toml:"queue_timeout"`
	Capture        string   `toml:"capture"`        // record the line to this .pcap or .txt file
	CaptureMaxMB   int      `toml:"capture_max_mb"` // rotate the capture past this size; 0: never
	OfflineAfter   *int     `toml:"offline_after"`  // failed transactions in a row that make a unit that answered offline: default 3; 0: the offline rule is off
	ProbeInterval  Duration `toml:"probe_interval"` // between probes of an offline unit: default 5s
	ProbeShare     *float64 `toml:"probe_share"`    // of the line's time in any minute that silence may take while others use it: default 0.05
	Discover       *bool    `toml:"discover"`       // probe each configured unit once at start and when a reload adds it: default true
	// The port: RS-485 mode of the kernel (serial ports), and the pause
	// after a network line's connection is made.
	RS485          bool     `toml:"rs485"`            // set the port's RS-485 mode (TIOCSRS485): the UART drives the transceiver
	RTSOnSend      string   `toml:"rts_on_send"`      // "high" (default) or "low": RTS while sending
	RTSDelayBefore Duration `toml:"rts_delay_before"` // RTS asserted this long before sending (milliseconds)
	RTSDelayAfter  Duration `toml:"rts_delay_after"`  // and kept this long after
	ConnectDelay   Duration `toml:"connect_delay"`    // tcp:// and modbus+tcp:// lines: pause after connecting before the first request
	// The devices' quirks, the line's default ([[bus.device]] overrides).
	MaxRegisters        *int   `toml:"max_registers"`         // registers one read may ask a device for (1..125): larger reads are split
	MaxBits             *int   `toml:"max_bits"`              // bits one read may ask a device for (1..2000)
	SingleRegisterWrite string `toml:"single_register_write"` // "fc16": FC 6 goes as FC 16 of one register; "fc6": FC 16 of one as FC 6
	SingleCoilWrite     string `toml:"single_coil_write"`     // "fc15": FC 5 goes as FC 15 of one coil; "fc5": FC 15 of one as FC 5
	// Faster than the wire: shared reads, the read cache, agent mode.
	SharedReads     *bool    `toml:"shared_reads"`      // identical reads share one transaction: default true
	CacheMaxAge     Duration `toml:"cache_max_age"`     // answer reads from values the line returned at most this long ago; 0: off
	CacheServeStale bool     `toml:"cache_serve_stale"` // while a unit is offline, answer from cached values of any age
	Device          []Device `toml:"device"`
	Poll            []Poll   `toml:"poll"` // agent mode: blocks the gateway polls itself to keep the cache warm

	Wire     Wire          `toml:"-"` // Port's kind
	Addr     string        `toml:"-"` // Port without its scheme: a device path or host:port
	UnitIDs  []byte        `toml:"-"` // Units, parsed
	LineUnit map[byte]byte `toml:"-"` // UnitMap, parsed: a client's unit id → the line's
	// Bound makes the line serve only the slave line whose forward it is
	// (the line a modbus+tcp:// forward makes), not TCP clients.
	Bound bool `toml:"-"`
}

// Device overrides a line's timing for one slow unit.
type Device struct {
	Unit            int       `toml:"unit"`
	Timeout         Duration  `toml:"timeout"`
	Retries         *int      `toml:"retries"`
	OfflineAfter    *int      `toml:"offline_after"`     // default: the line's
	ProbeInterval   Duration  `toml:"probe_interval"`    // default: the line's
	CacheMaxAge     *Duration `toml:"cache_max_age"`     // default: the line's
	CacheServeStale *bool     `toml:"cache_serve_stale"` // default: the line's
	// Quirks: default, the line's.
	FrameGap            Duration `toml:"frame_gap"` // the least silence before a frame to this unit
	MaxRegisters        *int     `toml:"max_registers"`
	MaxBits             *int     `toml:"max_bits"`
	SingleRegisterWrite string   `toml:"single_register_write"`
	SingleCoilWrite     string   `toml:"single_coil_write"`
}

// Poll is a block agent mode keeps warm in the cache.
type Poll struct {
	Unit     int      `toml:"unit"`
	Function int      `toml:"function"` // 1, 2, 3 or 4
	Address  int      `toml:"address"`
	Count    int      `toml:"count"`
	Interval Duration `toml:"interval"`
	Device   string   `toml:"device"` // Sparkplug device id: default "<line>-unit<N>"
	Value    []Value  `toml:"value"`  // named values, published over MQTT
}

// Cache returns unit u's cache settings on this line: its device's
// overrides, else the line's.
func (b *Bus) Cache(u byte) (maxAge time.Duration, serveStale bool) {
	maxAge, serveStale = b.CacheMaxAge.Duration, b.CacheServeStale
	for _, d := range b.Device {
		if byte(d.Unit) == u {
			if d.CacheMaxAge != nil {
				maxAge = d.CacheMaxAge.Duration
			}
			if d.CacheServeStale != nil {
				serveStale = *d.CacheServeStale
			}
		}
	}
	return maxAge, serveStale
}

// Load reads and checks a config file.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	c, err := Parse(string(data))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// Parse reads and checks a config from TOML text.
func Parse(text string) (*Config, error) {
	var c Config
	md, err := toml.Decode(text, &c)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return nil, fmt.Errorf("line %d: %s", pe.Position.Line, pe.Message)
		}
		return nil, err
	}
	if un := md.Undecoded(); len(un) > 0 {
		keys := make([]string, len(un))
		for i, k := range un {
			keys[i] = k.String()
		}
		return nil, fmt.Errorf("unknown key %s: check the spelling against the shipped config.toml", strings.Join(keys, ", "))
	}
	if !md.IsDefined("server", "listen") {
		c.Server.Listen = "127.0.0.1:5020"
	}
	if !md.IsDefined("server", "max_conns_per_ip") {
		c.Server.MaxConnsPerIP = DefaultMaxConnsPerIP
	}
	if !md.IsDefined("metrics", "max_streams") {
		c.Metrics.MaxStreams = DefaultMaxStreams
	}
	if !md.IsDefined("metrics", "max_streams_per_ip") {
		c.Metrics.MaxStreamsPerIP = DefaultMaxStreamsPerIP
	}
	if err := c.setDefaults(); err != nil {
		return nil, err
	}
	return &c, nil
}

func (c *Config) setDefaults() error {
	s := &c.Server
	if s.Listen != "" {
		if _, _, err := net.SplitHostPort(s.Listen); err != nil {
			return fmt.Errorf("server.listen %q: want host:port, such as \"0.0.0.0:502\"", s.Listen)
		}
	}
	if t := &s.TLS; t.Listen != "" {
		if _, _, err := net.SplitHostPort(t.Listen); err != nil {
			return fmt.Errorf("server.tls.listen %q: want host:port, such as \"0.0.0.0:802\"", t.Listen)
		}
		for _, k := range []struct{ key, v string }{{"cert", t.Cert}, {"key", t.Key}, {"client_ca", t.ClientCA}} {
			if k.v == "" {
				return fmt.Errorf("server.tls.%s: required with server.tls.listen (a PEM file)", k.key)
			}
		}
	}
	if l := s.RTUListen; l != "" {
		if _, _, err := net.SplitHostPort(l); err != nil {
			return fmt.Errorf("server.rtu_listen %q: want host:port, such as \"0.0.0.0:4002\"", l)
		}
	}
	if l := c.Metrics.Listen; l != "" {
		if _, _, err := net.SplitHostPort(l); err != nil {
			return fmt.Errorf("metrics.listen %q: want host:port, such as \"127.0.0.1:9502\"", l)
		}
	}
	if s.Listen == "" && s.TLS.Listen == "" && s.RTUListen == "" {
		return errors.New(`server.listen is empty and there is no server.tls.listen or server.rtu_listen: the gateway would listen nowhere`)
	}
	if s.MaxConns == 0 {
		s.MaxConns = 1000
	}
	if s.MaxConns < 0 {
		return fmt.Errorf("server.max_conns %d: must be positive", s.MaxConns)
	}
	if s.IdleTimeout.Duration == 0 {
		s.IdleTimeout.Duration = 60 * time.Second
	}
	if s.IdleTimeout.Duration < 0 {
		return fmt.Errorf("server.idle_timeout %v: must be positive", s.IdleTimeout)
	}
	for _, c := range s.PriorityClients {
		n, err := ParseNet(c)
		if err != nil {
			return fmt.Errorf("server.priority_clients: %w", err)
		}
		s.PriorityNets = append(s.PriorityNets, n)
	}
	for _, c := range s.Allow {
		n, err := ParseNet(c)
		if err != nil {
			return fmt.Errorf("server.allow: %w", err)
		}
		s.AllowNets = append(s.AllowNets, n)
	}
	if w := c.Metrics.WebConfig; w != "" {
		if c.Metrics.Listen == "" {
			return errors.New("metrics.web_config: needs metrics.listen, the listener it locks")
		}
		if err := checkWebConfig(w); err != nil {
			return fmt.Errorf("metrics.web_config: %w", err)
		}
	}
	if m := &c.Metrics; m.MaxStreams < 0 || m.MaxStreamsPerIP < 0 {
		return fmt.Errorf("metrics.max_streams %d, max_streams_per_ip %d: must be 0 or positive", m.MaxStreams, m.MaxStreamsPerIP)
	}
	if s.MaxConnsPerIP < 0 {
		return fmt.Errorf("server.max_conns_per_ip %d: must be 0 (no cap) or positive", s.MaxConnsPerIP)
	}
	if s.RateLimit < 0 {
		return fmt.Errorf("server.rate_limit %v: must be 0 (no limit) or a number of requests per second", s.RateLimit)
	}
	if err := c.MQTT.check(); err != nil {
		return err
	}
	for i := range c.Access {
		if err := c.Access[i].parse(); err != nil {
			return fmt.Errorf("[[access]] table %d: %w", i+1, err)
		}
	}
	switch c.Log.Level {
	case "":
		c.Log.Level = "info"
	case "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("log.level %q: must be debug, info, warn or error", c.Log.Level)
	}
	switch c.Log.Format {
	case "":
		c.Log.Format = "text"
	case "text", "json":
	default:
		return fmt.Errorf("log.format %q: must be text or json", c.Log.Format)
	}
	if len(c.Bus) == 0 {
		return errors.New("no [[bus]] table: configure at least one serial line")
	}
	owner := map[byte]string{}
	names := map[string]bool{}
	for i := range c.Bus {
		b := &c.Bus[i]
		key := fmt.Sprintf("bus[%d]", i)
		if b.Name != "" {
			key = fmt.Sprintf("bus %q", b.Name)
		}
		if err := b.setDefaults(); err != nil {
			return fmt.Errorf("%s: %w", key, err)
		}
		if names[b.Name] {
			return fmt.Errorf("%s: name: another [[bus]] has the same name", key)
		}
		names[b.Name] = true
		for _, u := range b.UnitIDs {
			if other, ok := owner[u]; ok {
				return fmt.Errorf("%s: units: unit %d is already served by bus %q; a unit id belongs to one line", key, u, other)
			}
			owner[u] = b.Name
		}
	}
	if err := c.checkSlaveLines(); err != nil {
		return err
	}
	if err := c.checkSelfUnit(); err != nil {
		return err
	}
	if err := c.checkPorts(); err != nil {
		return err
	}
	return c.checkDevices()
}

// checkSelfUnit checks server.self_unit: a unit id no line serves.
func (c *Config) checkSelfUnit() error {
	u := c.Server.SelfUnit
	if u == 0 {
		return nil
	}
	if u < 1 || u > 255 {
		return fmt.Errorf("server.self_unit %d: must be 1..255 (255, which no RTU device can have, by convention); 0: none", u)
	}
	for _, b := range c.Bus {
		if contains(b.UnitIDs, byte(u)) {
			return fmt.Errorf("server.self_unit %d: unit %d is served by bus %q; the gateway's own unit must be one no line serves, such as 255", u, u, b.Name)
		}
	}
	return nil
}

// checkPorts refuses two lines on one port: two [[bus]] tables (or a
// [[bus]] and a [[slave_line]]) whose ports name the same device, after
// symbolic links (/dev/serial/by-id/...) are resolved, or the same
// address. Each would frame and route on its own, so a unit the one
// refuses could be reached through the other, under another id.
func (c *Config) checkPorts() error {
	seen := make(map[string]string) // the port, resolved → its table
	check := func(key, port string) error {
		id := portID(port)
		if other, ok := seen[id]; ok {
			return fmt.Errorf("%s: port %q: already the port of %s; one line per port (put all of its units on one [[bus]])", key, port, other)
		}
		seen[id] = key
		return nil
	}
	for _, b := range c.Bus {
		if b.Bound {
			continue // a slave line's modbus+tcp:// forward: its own connection
		}
		if err := check(fmt.Sprintf("bus %q", b.Name), b.Port); err != nil {
			return err
		}
	}
	for _, s := range c.SlaveLine {
		if err := check(fmt.Sprintf("slave_line %q", s.Name), s.Port); err != nil {
			return err
		}
	}
	return nil
}

// portID is what two ports that are the same device have in common: a
// device path with its links resolved, or a URL's scheme and address.
func portID(port string) string {
	w, addr, err := ParsePort(port)
	if err != nil || w != Serial {
		return strings.ToLower(port)
	}
	if p, err := filepath.EvalSymlinks(addr); err == nil {
		return p
	}
	return filepath.Clean(addr)
}

// checkDevices checks the Sparkplug devices the polls make: one unit
// each, metric names unique within a device.
func (c *Config) checkDevices() error {
	type device struct {
		unit  int
		names map[string]bool
	}
	devices := make(map[string]*device)
	for _, b := range c.Bus {
		for j, p := range b.Poll {
			key := fmt.Sprintf("bus %q: poll[%d]", b.Name, j)
			if strings.ContainsAny(p.Device, "/+#") {
				return fmt.Errorf("%s: device %q: a Sparkplug id must not contain /, + or #", key, p.Device)
			}
			d := devices[p.Device]
			if d == nil {
				d = &device{unit: p.Unit, names: make(map[string]bool)}
				devices[p.Device] = d
			}
			if d.unit != p.Unit {
				return fmt.Errorf("%s: device %q: already the name of unit %d's polls; a device is one unit", key, p.Device, d.unit)
			}
			for _, v := range p.Value {
				if d.names[v.Name] {
					return fmt.Errorf("%s: value %q: device %q has another value of that name", key, v.Name, p.Device)
				}
				d.names[v.Name] = true
			}
		}
	}
	return nil
}

func (b *Bus) setDefaults() error {
	if b.Name == "" {
		return errors.New("name: required, a short name for the line used in logs")
	}
	var err error
	if b.Wire, b.Addr, err = ParsePort(b.Port); err != nil {
		return err
	}
	if b.Baud == 0 {
		b.Baud = 19200
	}
	switch b.Mode = strings.ToLower(b.Mode); b.Mode {
	case "":
		b.Mode = "rtu"
	case "rtu", "ascii":
	default:
		return fmt.Errorf("mode %q: want \"rtu\" or \"ascii\"", b.Mode)
	}
	if b.Mode == "ascii" && b.Wire != Serial {
		return fmt.Errorf("mode \"ascii\": only on a serial port, not on %q", b.Port)
	}
	if b.DataBits == 0 {
		b.DataBits = 8
		if b.Mode == "ascii" {
			b.DataBits = 7 // the spec's default for ASCII
		}
	}
	if b.Parity == "" {
		b.Parity = "E"
	}
	b.Parity = strings.ToUpper(b.Parity)
	if b.StopBits == 0 {
		b.StopBits = 1
	}
	if err := checkSerial(b.Baud, b.DataBits, b.Parity, b.StopBits); err != nil {
		return err
	}
	if b.Timeout.Duration == 0 {
		b.Timeout.Duration = 500 * time.Millisecond
	}
	if b.Timeout.Duration < 0 {
		return fmt.Errorf("timeout %v: must be positive", b.Timeout)
	}
	if b.Retries == nil {
		one := 1
		b.Retries = &one
	}
	if *b.Retries < 0 || *b.Retries > 10 {
		return fmt.Errorf("retries %d: must be 0..10", *b.Retries)
	}
	if b.Broadcast == nil {
		yes := true
		b.Broadcast = &yes
	}
	for _, d := range []struct {
		key string
		v   Duration
	}{{"broadcast_delay", b.BroadcastDelay}, {"frame_gap", b.FrameGap}, {"char_gap", b.CharGap}, {"queue_timeout", b.QueueTimeout}} {
		if d.v.Duration < 0 {
			return fmt.Errorf("%s %v: must be positive", d.key, d.v)
		}
	}
	if b.Capture != "" {
		switch ext := strings.ToLower(filepath.Ext(b.Capture)); ext {
		case ".pcap", ".txt":
		default:
			return fmt.Errorf("capture %q: the file must end in .pcap or .txt", b.Capture)
		}
	}
	if b.CaptureMaxMB < 0 {
		return fmt.Errorf("capture_max_mb %d: must be positive", b.CaptureMaxMB)
	}
	if b.QueueSize < 0 {
		return fmt.Errorf("queue_size %d: must be positive", b.QueueSize)
	}
	if b.OfflineAfter == nil {
		three := 3
		b.OfflineAfter = &three
	}
	if *b.OfflineAfter < 0 {
		return fmt.Errorf("offline_after %d: must be 0 (never) or more", *b.OfflineAfter)
	}
	if b.ProbeInterval.Duration == 0 {
		b.ProbeInterval.Duration = 5 * time.Second
	}
	if b.ProbeInterval.Duration < 0 {
		return fmt.Errorf("probe_interval %v: must be positive", b.ProbeInterval)
	}
	if b.ProbeShare == nil {
		share := 0.05
		b.ProbeShare = &share
	}
	if x := *b.ProbeShare; x < 0 || x > 1 {
		return fmt.Errorf("probe_share %v: must be between 0 (silence only while no one else uses the line) and 1 (a share of the line's time, such as 0.05)", x)
	}
	if b.Discover == nil {
		yes := true
		b.Discover = &yes
	}
	if len(b.Units) == 0 {
		return errors.New("units: required, the unit ids on this line, such as [\"1-247\"] or [\"1\", \"5-8\"]")
	}
	ids, err := ParseUnits(b.Units)
	if err != nil {
		return fmt.Errorf("units: %w", err)
	}
	b.UnitIDs = ids
	if err := b.parseUnitMap(); err != nil {
		return err
	}
	for j, d := range b.Device {
		if d.Unit < 1 || d.Unit > 247 || !contains(ids, byte(d.Unit)) {
			return fmt.Errorf("device[%d]: unit %d: must be one of this line's units", j, d.Unit)
		}
		if d.Timeout.Duration < 0 {
			return fmt.Errorf("device[%d]: timeout %v: must be positive", j, d.Timeout)
		}
		if d.Retries != nil && (*d.Retries < 0 || *d.Retries > 10) {
			return fmt.Errorf("device[%d]: retries %d: must be 0..10", j, *d.Retries)
		}
		if d.OfflineAfter != nil && *d.OfflineAfter < 0 {
			return fmt.Errorf("device[%d]: offline_after %d: must be 0 (never) or more", j, *d.OfflineAfter)
		}
		if d.ProbeInterval.Duration < 0 {
			return fmt.Errorf("device[%d]: probe_interval %v: must be positive", j, d.ProbeInterval)
		}
		if d.CacheMaxAge != nil && d.CacheMaxAge.Duration < 0 {
			return fmt.Errorf("device[%d]: cache_max_age %v: must be 0 (off) or positive", j, d.CacheMaxAge)
		}
		if d.FrameGap.Duration < 0 {
			return fmt.Errorf("device[%d]: frame_gap %v: must be positive, such as \"20ms\"", j, d.FrameGap)
		}
		if err := checkQuirks(d.MaxRegisters, d.MaxBits, d.SingleRegisterWrite, d.SingleCoilWrite); err != nil {
			return fmt.Errorf("device[%d]: %w", j, err)
		}
	}
	if err := checkQuirks(b.MaxRegisters, b.MaxBits, b.SingleRegisterWrite, b.SingleCoilWrite); err != nil {
		return err
	}
	if err := b.checkPortKeys(); err != nil {
		return err
	}
	if b.SharedReads == nil {
		yes := true
		b.SharedReads = &yes
	}
	if b.CacheMaxAge.Duration < 0 {
		return fmt.Errorf("cache_max_age %v: must be 0 (off) or positive, such as \"500ms\"", b.CacheMaxAge)
	}
	for j := range b.Poll {
		p := &b.Poll[j]
		if p.Device == "" {
			p.Device = fmt.Sprintf("%s-unit%d", b.Name, p.Unit)
		}
		if err := p.check(ids); err != nil {
			return fmt.Errorf("poll[%d]: %w", j, err)
		}
	}
	return nil
}

// parseUnitMap reads unit_map: each entry "a-b:c" (or "a:c") sends the
// clients' units a..b to the line as c, c+1, ...; each must be one of
// units, and no two may reach the same unit on the line.
func (b *Bus) parseUnitMap() error {
	b.LineUnit = nil
	if len(b.UnitMap) == 0 {
		return nil
	}
	b.LineUnit = make(map[byte]byte)
	for _, e := range b.UnitMap {
		from, to, ok := strings.Cut(e, ":")
		first, err := strconv.Atoi(strings.TrimSpace(to))
		ids, err2 := ParseUnits([]string{from})
		if !ok || err != nil || err2 != nil || strings.Contains(from, ",") {
			return fmt.Errorf("unit_map %q: want \"101-110:1\" (the clients' units 101 to 110 are the line's 1 to 10) or \"101:1\"", e)
		}
		for i, u := range ids {
			if !contains(b.UnitIDs, u) {
				return fmt.Errorf("unit_map %q: unit %d is not in units; units lists the ids clients use", e, u)
			}
			if _, dup := b.LineUnit[u]; dup {
				return fmt.Errorf("unit_map %q: unit %d is mapped twice", e, u)
			}
			lu := first + i
			if lu < 1 || lu > 247 {
				return fmt.Errorf("unit_map %q: unit %d would be %d on the line; unit ids run from 1 to 247", e, u, lu)
			}
			b.LineUnit[u] = byte(lu)
		}
	}
	// No two of the clients' units may reach one device.
	reach := make(map[byte]byte)
	for _, u := range b.UnitIDs {
		lu := u
		if m, ok := b.LineUnit[u]; ok {
			lu = m
		}
		if other, ok := reach[lu]; ok {
			return fmt.Errorf("unit_map: units %d and %d both reach unit %d on the line", other, u, lu)
		}
		reach[lu] = u
	}
	return nil
}

func (p *Poll) check(units []byte) error {
	if p.Unit < 1 || p.Unit > 247 || !contains(units, byte(p.Unit)) {
		return fmt.Errorf("unit %d: must be one of this line's units", p.Unit)
	}
	limit := 125 // registers in one read
	switch p.Function {
	case 1, 2:
		limit = 2000 // bits
	case 3, 4:
	default:
		return fmt.Errorf("function %d: must be 1 (coils), 2 (discrete inputs), 3 (holding registers) or 4 (input registers)", p.Function)
	}
	if p.Count < 1 || p.Count > limit {
		return fmt.Errorf("count %d: must be 1..%d for function %d", p.Count, limit, p.Function)
	}
	if p.Address < 0 || p.Address+p.Count > 65536 {
		return fmt.Errorf("address %d with count %d: the block must lie within 0..65535", p.Address, p.Count)
	}
	if p.Interval.Duration < 10*time.Millisecond {
		return fmt.Errorf("interval %v: required, at least 10ms, such as \"1s\"", p.Interval)
	}
	names := make(map[string]bool)
	for i := range p.Value {
		v := &p.Value[i]
		if err := v.check(*p); err != nil {
			return fmt.Errorf("value[%d]: %w", i, err)
		}
		if names[v.Name] {
			return fmt.Errorf("value[%d]: name %q: another value of this poll has it", i, v.Name)
		}
		names[v.Name] = true
	}
	return nil
}

func (a *Access) parse() error {
	if a.Allow == "" {
		return errors.New(`allow: missing; write allow = "read", "read-write" or "none"`)
	}
	switch a.Allow {
	case AllowNone, AllowRead, AllowReadWrite:
	default:
		return fmt.Errorf("allow %q: must be \"read\", \"read-write\" or \"none\"", a.Allow)
	}
	for _, r := range a.Roles {
		if r == "" {
			return errors.New("roles: an empty role; omit roles to match any client")
		}
	}
	for _, src := range a.Sources {
		n, err := ParseNet(src)
		if err != nil {
			return fmt.Errorf("sources: %w", err)
		}
		a.SourceNets = append(a.SourceNets, n)
	}
	var err error
	if a.UnitIDs, err = ParseUnits(a.Units); err != nil {
		return fmt.Errorf("units: %w", err)
	}
	return nil
}

// ParseNet parses a client network: a CIDR prefix such as
// "10.0.0.0/8", or a single address ("10.0.0.5" is "10.0.0.5/32").
// Clients are matched by their plain address (an IPv4 client reaching an
// IPv6 socket is its IPv4 address), so an IPv4-mapped network is taken as
// the IPv4 network it maps: "::ffff:10.0.0.5" is "10.0.0.5/32".
func ParseNet(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q: want an address or a network such as \"10.0.0.5\" or \"10.1.0.0/16\"", s)
		}
		if a.Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("%q: clients are matched without a zone; leave out %%%s", s, a.Zone())
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	if a := p.Addr(); a.Is4In6() {
		if p.Bits() < 96 {
			return netip.Prefix{}, fmt.Errorf("%q: an IPv4-mapped network shorter than /96 spans IPv6 addresses too; write the IPv4 network and the IPv6 one apart", s)
		}
		p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	return p.Masked(), nil
}

func contains(ids []byte, u byte) bool {
	for _, id := range ids {
		if id == u {
			return true
		}
	}
	return false
}

// ParseUnits parses unit ids written as numbers and "a-b" ranges, each
// within 1..247 (0 is broadcast, 248..255 are reserved).
func ParseUnits(specs []string) ([]byte, error) {
	var ids []byte
	seen := [256]bool{}
	for _, s := range specs {
		for part := range strings.SplitSeq(s, ",") {
			part = strings.TrimSpace(part)
			lo, hi, isRange := strings.Cut(part, "-")
			a, err1 := strconv.Atoi(strings.TrimSpace(lo))
			b, err2 := a, error(nil)
			if isRange {
				b, err2 = strconv.Atoi(strings.TrimSpace(hi))
			}
			if err1 != nil || err2 != nil || a > b {
				return nil, fmt.Errorf("%q: want a unit id or a range such as \"1-247\"", part)
			}
			if a < 1 || b > 247 {
				return nil, fmt.Errorf("%q: unit ids run from 1 to 247 (0 is broadcast, 248-255 are reserved)", part)
			}
			for u := a; u <= b; u++ {
				if !seen[u] {
					seen[u] = true
					ids = append(ids, byte(u))
				}
			}
		}
	}
	return ids, nil
}
