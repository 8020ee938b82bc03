package gateway

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"reflect"
	"time"

	"github.com/mcpgw/mcpgw/pkg/chain/cache"
	"github.com/mcpgw/mcpgw/pkg/chain/offline"
	"github.com/mcpgw/mcpgw/pkg/chain/poller"
	"github.com/mcpgw/mcpgw/pkg/config"
	"github.com/mcpgw/mcpgw/pkg/ops/capture"
	"github.com/mcpgw/mcpgw/pkg/ops/selfunit"
	"github.com/mcpgw/mcpgw/pkg/ops/status"
	"github.com/mcpgw/mcpgw/pkg/quirk"
	"github.com/mcpgw/mcpgw/pkg/request"
	"github.com/mcpgw/mcpgw/pkg/rtu"
	"github.com/mcpgw/mcpgw/pkg/wire/ascii"
	"github.com/mcpgw/mcpgw/pkg/wire/netserial"
	"github.com/mcpgw/mcpgw/pkg/wire/serialport"
	"github.com/mcpgw/mcpgw/pkg/wire/slaveline"
	"github.com/mcpgw/mcpgw/pkg/wire/tcpdevice"
)

// line is one [[bus]] as it runs: its bus, the table it was built from,
// and its capture.
type line struct {
	bus  *rtu.Bus
	conf config.Bus
	rec  *capture.Recorder
}

// portConf is what of a [[bus]] its bus is built from: a change to it
// reopens the line. The rest (units and their map, devices, broadcast, the offline
// rule and the silence budget, discovery, shared reads, the cache and the
// polls, the devices' quirks) only changes the routes and the rules.
func portConf(b config.Bus) config.Bus {
	b.Units, b.UnitIDs, b.Device, b.Broadcast, b.UnitMap, b.LineUnit = nil, nil, nil, nil, nil, nil
	b.OfflineAfter, b.ProbeInterval, b.ProbeShare, b.Discover = nil, config.Duration{}, nil, nil
	b.SharedReads, b.CacheMaxAge, b.CacheServeStale, b.Poll = nil, config.Duration{}, false, nil
	b.MaxRegisters, b.MaxBits, b.SingleRegisterWrite, b.SingleCoilWrite = nil, nil, "", ""
	return b
}

// Lines returns the serial lines now running, in the configuration's
// order.
func (s *Service) Lines() []*rtu.Bus {
	cur := s.current()
	buses := make([]*rtu.Bus, len(cur))
	for i, l := range cur {
		buses[i] = l.bus
	}
	return buses
}

func (s *Service) current() []*line {
	if p := s.lines.Load(); p != nil {
		return *p
	}
	return nil
}

// unitStates are the configured units, line by line, and what the
// offline rule knows of each.
func (s *Service) unitStates() []offline.Unit {
	var us []offline.Unit
	for _, l := range s.current() {
		for _, u := range l.conf.UnitIDs {
			st, since := s.Offline.State(u)
			us = append(us, offline.Unit{Line: l.conf.Name, Unit: u, State: st, Since: since})
		}
	}
	return us
}

// selfLines are the lines as the gateway's own unit shows them.
func (s *Service) selfLines() []selfunit.Line {
	cur := s.current()
	lines := make([]selfunit.Line, len(cur))
	for i, l := range cur {
		st := l.bus.Stats()
		lines[i] = selfunit.Line{Up: l.bus.Up(), Why: whyDown(l.bus.Down()), Transactions: st.Requests,
			Failures: st.Timeouts, CRCErrors: st.CRCErrors, Queued: l.bus.Queued()}
	}
	return lines
}

// whyDown is the gateway's own unit's code for why a line is down.
func whyDown(err error) uint16 {
	var netErr net.Error
	switch {
	case err == nil:
		return selfunit.NotOpened
	case errors.Is(err, serialport.ErrRS485):
		return selfunit.RS485
	case errors.Is(err, rtu.ErrGone), errors.Is(err, fs.ErrNotExist):
		return selfunit.Missing
	case errors.Is(err, fs.ErrPermission):
		return selfunit.Permission
	case errors.As(err, &netErr):
		return selfunit.Unreachable
	}
	return selfunit.IOError
}

// statusLines are the lines as the status page shows them.
func (s *Service) statusLines() []status.Line {
	cur := s.current()
	lines := make([]status.Line, len(cur))
	for i, l := range cur {
		b := l.conf
		lines[i] = status.Line{Bus: l.bus, Port: b.Port,
			Settings: fmt.Sprintf("%d %d%s%d", b.Baud, b.DataBits, b.Parity, b.StopBits)}
	}
	return lines
}

// setLines makes the running lines, routes and offline rules those of
// cfg: at start, and on reload while clients are served. A line whose
// port settings are unchanged keeps running as it is; a changed one is
// replaced by a new bus that takes over its queue once the transaction in
// flight is done (rtu.Bus.Retire); a removed one finishes that
// transaction and closes. It returns what it changed, for the log. On an
// error (a capture file that cannot be created) nothing has changed.
func (s *Service) setLines(cfg *config.Config) (changes []string, err error) {
	old := make(map[string]*line)
	for _, l := range s.current() {
		old[l.conf.Name] = l
	}
	var (
		next    []*line
		started []*line // new buses, to run
		created []*capture.Recorder
	)
	for _, b := range cfg.Bus {
		prev := old[b.Name]
		if prev != nil && reflect.DeepEqual(portConf(prev.conf), portConf(b)) {
			if !reflect.DeepEqual(prev.conf, b) {
				changes = append(changes, fmt.Sprintf("bus %q: units, devices, offline rule, cache or polls", b.Name))
			}
			prev.bus.SetProbeShare(*b.ProbeShare)
			next = append(next, &line{bus: prev.bus, conf: b, rec: prev.rec})
			continue
		}
		l := &line{conf: b}
		switch {
		case b.Capture == "":
		case prev != nil && prev.conf.Capture == b.Capture && prev.conf.CaptureMaxMB == b.CaptureMaxMB:
			l.rec = prev.rec // the new bus writes only once the old one has closed
		default:
			w, err := capture.Create(b.Capture, int64(b.CaptureMaxMB)<<20)
			if err != nil {
				for _, r := range created {
					r.Close()
				}
				return nil, fmt.Errorf("bus %q: %w", b.Name, err)
			}
			l.rec = capture.NewRecorder(w, s.log)
			created = append(created, l.rec)
			s.log.Info("capturing serial line", "line", b.Name, "file", b.Capture)
		}
		var replaces *rtu.Bus
		if prev != nil {
			replaces = prev.bus
			changes = append(changes, fmt.Sprintf("bus %q: reopened", b.Name))
		} else if s.started.Load() {
			changes = append(changes, fmt.Sprintf("bus %q: added", b.Name))
		}
		l.bus = s.newBus(b, l.rec, replaces)
		next = append(next, l)
		started = append(started, l)
	}
	// Requests go to the new lines from here on; those already queued on
	// a replaced one follow it (Retire).
	p := planOf(next)
	s.lines.Store(&next)
	s.Router.SetRoutes(p.routes)
	s.Offline.SetRules(p.offline)
	s.Cache.SetRules(p.cache)
	s.Shared.SetOff(p.unshared)
	s.polls = p.polls
	if s.ctx != nil {
		for _, l := range started {
			s.wg.Go(func() { l.bus.Run(s.ctx) })
		}
		s.Cache.Unpoll()
		s.Agent.Set(p.polls)
	}
	byName := make(map[string]*line)
	for _, l := range next {
		byName[l.conf.Name] = l
	}
	for name, prev := range old {
		l := byName[name]
		if l != nil && l.bus == prev.bus {
			continue
		}
		var by *rtu.Bus
		if l != nil {
			by = l.bus
		} else {
			changes = append(changes, fmt.Sprintf("bus %q: removed", name))
		}
		prev.bus.Retire(by)
		if prev.rec != nil && (l == nil || l.rec != prev.rec) {
			s.closeAfter(prev.bus, prev.rec)
		}
	}
	return changes, nil
}

// closeAfter closes a retired line's capture once its bus has closed.
func (s *Service) closeAfter(bus *rtu.Bus, rec *capture.Recorder) {
	closeRec := func() {
		if err := rec.Close(); err != nil {
			s.log.Error("closing capture", "err", err)
		}
	}
	if s.ctx == nil { // never ran
		closeRec()
		return
	}
	s.wg.Go(func() {
		<-bus.Closed()
		closeRec()
	})
}

// newBus builds the bus of a [[bus]] table; replaces is the bus it takes
// over from on a reload, or nil.
func (s *Service) newBus(b config.Bus, rec *capture.Recorder, replaces *rtu.Bus) *rtu.Bus {
	settings := serialSettings(b.Baud, b.DataBits, b.Parity, b.StopBits)
	if b.RS485 {
		settings.RS485 = &serialport.RS485{RTSLowOnSend: b.RTSOnSend == "low",
			DelayBefore: b.RTSDelayBefore.Duration, DelayAfter: b.RTSDelayAfter.Duration}
	}
	path, open := b.Addr, opener(b.Wire, b.Addr, settings, b.ConnectDelay.Duration)
	var burst time.Duration
	frameGap := b.FrameGap.Duration
	switch b.Wire {
	case config.SerialServer:
		path = "" // a serial device server: no device node to watch
	case config.ModbusTCP:
		// A Modbus TCP device: the line's frames as MBAP, no silence owed
		// between them.
		path = ""
		if frameGap == 0 {
			frameGap = time.Microsecond
		}
	default:
		burst = serialport.LatencyTimer(path)
	}
	if b.Mode == "ascii" {
		// The same line's rules; ':' hex LRC CR LF on the wire.
		serial := open
		open = func() (rtu.Port, error) {
			p, err := serial()
			if err != nil {
				return nil, err
			}
			return ascii.New(p), nil
		}
	}
	if burst > 0 {
		s.log.Info("USB serial adapter with a latency timer: default frame_gap and char_gap allow for its bursts",
			"line", b.Name, "port", path, "latency_timer", burst)
	}
	var capt rtu.Recorder // nil, not a nil *capture.Recorder, when there is none
	if rec != nil {
		capt = rec
	}
	return rtu.NewBus(rtu.Config{
		Name:           b.Name,
		Open:           open,
		Path:           path,
		CharTime:       settings.CharTime(),
		FrameGap:       frameGap,
		CharGap:        b.CharGap.Duration,
		Burst:          burst,
		Timeout:        b.Timeout.Duration,
		Retries:        *b.Retries,
		BroadcastDelay: b.BroadcastDelay.Duration,
		Echo:           b.Echo,
		QueueSize:      b.QueueSize,
		QueueTimeout:   b.QueueTimeout.Duration,
		ProbeShare:     *b.ProbeShare,
		Capture:        capt,
		Log:            s.log,
		Replaces:       replaces,
	})
}

// opener opens a line's port: a serial device, a serial device server
// (tcp://: the line's bytes over TCP) or a Modbus TCP device
// (modbus+tcp://: its frames as MBAP). A network line's port is handed
// on delay after its connection is made (connect_delay: inverter
// dongles that need a second before they take a request).
func opener(w config.Wire, addr string, settings serialport.Settings, delay time.Duration) func() (rtu.Port, error) {
	var dial func() (rtu.Port, error)
	switch w {
	case config.SerialServer:
		dial = func() (rtu.Port, error) { return netserial.Dial(addr, 5*time.Second) }
	case config.ModbusTCP:
		dial = func() (rtu.Port, error) { return tcpdevice.Dial(addr, 5*time.Second) }
	default:
		return func() (rtu.Port, error) { return serialport.Open(addr, settings) }
	}
	if delay <= 0 {
		return dial
	}
	return func() (rtu.Port, error) {
		p, err := dial()
		if err == nil {
			time.Sleep(delay)
		}
		return p, err
	}
}

// serialSettings is a line's character format as the config writes it.
func serialSettings(baud, dataBits int, parity string, stopBits int) serialport.Settings {
	return serialport.Settings{Baud: baud, DataBits: dataBits, Parity: parity[0], StopBits: stopBits}
}

// plan is what the lines' tables say of each unit, for the handlers.
type plan struct {
	routes   *Routes
	offline  map[byte]offline.Rule
	cache    map[byte]cache.Rule
	unshared []byte // shared_reads = false
	polls    []poller.Poll
}

// planOf is the routing table, the offline rules, the cache rules and
// the polls of lines: each unit to its line, with its device's
// overrides.
func planOf(lines []*line) plan {
	p := plan{routes: &Routes{}, offline: make(map[byte]offline.Rule), cache: make(map[byte]cache.Rule)}
	for _, l := range lines {
		b := &l.conf
		rule := offline.Rule{Line: b.Name, After: *b.OfflineAfter, Probe: b.ProbeInterval.Duration, Bound: b.Bound}
		lineQuirks := quirks(quirk.Device{}, b.MaxRegisters, b.MaxBits, b.SingleRegisterWrite, b.SingleCoilWrite)
		for _, u := range b.UnitIDs {
			p.routes.Add(u, Route{Line: l.bus, Unit: b.LineUnit[u], Retries: -1, Bound: b.Bound, Quirks: quirksOf(lineQuirks)})
			p.offline[u] = rule
		}
		for _, d := range b.Device {
			r := Route{Line: l.bus, Unit: b.LineUnit[byte(d.Unit)], Timeout: d.Timeout.Duration, Retries: -1, Bound: b.Bound,
				Gap:    d.FrameGap.Duration,
				Quirks: quirksOf(quirks(lineQuirks, d.MaxRegisters, d.MaxBits, d.SingleRegisterWrite, d.SingleCoilWrite))}
			if d.Retries != nil {
				r.Retries = *d.Retries
			}
			p.routes.Add(byte(d.Unit), r)
			dr := rule
			if d.OfflineAfter != nil {
				dr.After = *d.OfflineAfter
			}
			if d.ProbeInterval.Duration > 0 {
				dr.Probe = d.ProbeInterval.Duration
			}
			p.offline[byte(d.Unit)] = dr
		}
		if *b.Broadcast {
			p.routes.AddBroadcast(l.bus, b.Bound)
		}
		// A polled value answers reads for an interval after its answer
		// came back. A poll starts early by the time the last one took
		// (pkg/chain/poller), so the next answer comes before then; one that is
		// late or fails leaves reads to the line, not to older values.
		// The device read the value a transaction at most before its
		// answer came back, so no value served is older than the
		// interval plus one transaction, with the request's time on the
		// wire and the gap before it to spare for the gateway's and the
		// client's own lateness.
		polled := make(map[byte]bool)
		for _, q := range b.Poll {
			u := byte(q.Unit)
			polled[u] = true
			p.polls = append(p.polls, poller.Poll{Line: b.Name, Unit: u, Function: byte(q.Function),
				Address: uint16(q.Address), Count: uint16(q.Count), Interval: q.Interval.Duration,
				Keep: q.Interval.Duration})
		}
		for _, u := range b.UnitIDs {
			if age, stale := b.Cache(u); age > 0 || stale || polled[u] {
				p.cache[u] = cache.Rule{Line: b.Name, MaxAge: age, ServeStale: stale}
			}
			if !*b.SharedReads || b.Bound {
				p.unshared = append(p.unshared, u)
			}
		}
	}
	return p
}

// quirks is q with what a [[bus]] or [[bus.device]] table sets of them.
func quirks(q quirk.Device, maxRegisters, maxBits *int, singleRegister, singleCoil string) quirk.Device {
	if maxRegisters != nil {
		q.MaxRegisters = *maxRegisters
	}
	if maxBits != nil {
		q.MaxBits = *maxBits
	}
	switch singleRegister {
	case "fc16":
		q.Registers = quirk.AsMultiple
	case "fc6":
		q.Registers = quirk.AsSingle
	}
	switch singleCoil {
	case "fc15":
		q.Coils = quirk.AsMultiple
	case "fc5":
		q.Coils = quirk.AsSingle
	}
	return q
}

// quirksOf is a route's quirks: nil for none, so the router's path for
// the devices that follow the spec stays as it is.
func quirksOf(q quirk.Device) *quirk.Device {
	if q.IsZero() {
		return nil
	}
	return &q
}

// newSlaveLine builds a [[slave_line]]: its requests go into handler,
// the gateway's whole chain, which routes them to forward's line.
func newSlaveLine(sl config.SlaveLine, handler request.Handler, log *slog.Logger) *slaveline.Line {
	settings := serialSettings(sl.Baud, sl.DataBits, sl.Parity, sl.StopBits)
	return slaveline.New(slaveline.Config{
		Name:     sl.Name,
		Open:     opener(sl.Wire, sl.Addr, settings, 0),
		FrameGap: rtu.FrameGap(settings.CharTime()),
		Units:    sl.UnitIDs,
		Forward:  sl.ForwardLine(),
		Timeout:  sl.Timeout.Duration,
		Handler:  handler,
		Log:      log,
	})
}
