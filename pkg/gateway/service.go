package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/exporter-toolkit/web"

	"github.com/mcpgw/mcpgw/pkg/chain/access"
	"github.com/mcpgw/mcpgw/pkg/chain/cache"
	"github.com/mcpgw/mcpgw/pkg/chain/coalesce"
	"github.com/mcpgw/mcpgw/pkg/chain/offline"
	"github.com/mcpgw/mcpgw/pkg/chain/poller"
	"github.com/mcpgw/mcpgw/pkg/chain/ratelimit"
	"github.com/mcpgw/mcpgw/pkg/chain/validate"
	"github.com/mcpgw/mcpgw/pkg/config"
	"github.com/mcpgw/mcpgw/pkg/north/sparkplug"
	"github.com/mcpgw/mcpgw/pkg/ops/metrics"
	"github.com/mcpgw/mcpgw/pkg/ops/selfunit"
	"github.com/mcpgw/mcpgw/pkg/ops/status"
	"github.com/mcpgw/mcpgw/pkg/tcp"
	"github.com/mcpgw/mcpgw/pkg/wire/mbsec"
	"github.com/mcpgw/mcpgw/pkg/wire/rtuovertcp"
	"github.com/mcpgw/mcpgw/pkg/wire/slaveline"
)

// Service is a configured gateway: its serial lines, the router and the
// TCP server, started and stopped in order.
type Service struct {
	Router  *Gateway
	Shared  *coalesce.Handler
	Cache   *cache.Handler
	Agent   *poller.Agent
	Access  *access.Handler
	Limits  *ratelimit.Handler
	Checks  *validate.Handler
	Self    *selfunit.Handler // the gateway's own unit (server.self_unit)
	Offline *offline.Handler
	Server  *tcp.Server // plain Modbus TCP; nil if server.listen is empty
	TLS     *tcp.Server // Modbus/TCP Security; nil without server.tls.listen
	RTU     *tcp.Server // RTU over TCP; nil without server.rtu_listen
	RTUAddr net.Addr    // where RTU over TCP listens, once started
	Certs   *mbsec.Certs
	TLSAddr net.Addr // where TLS listens, once started
	Metrics *metrics.Metrics
	Status  *status.Status
	Node    *sparkplug.Node   // the Sparkplug edge node; nil without mqtt.brokers
	Slaves  []*slaveline.Line // [[slave_line]]: the gateway as a serial slave
	// MetricsAddr is where /metrics, /healthz and /readyz are served,
	// once started; nil without metrics.listen.
	MetricsAddr net.Addr
	// OnReload, if set, reloads the configuration when asked through the
	// metrics listener (POST ReloadPath from a loopback address: mcpgw
	// reload). The command sets it, since it knows the file and the log.
	OnReload func() ReloadResult
	http     *http.Server
	started  atomic.Bool

	cfg      *config.Config // as started: what Reload compares with
	log      *slog.Logger
	lines    atomic.Pointer[[]*line] // replaced whole by setLines
	polls    []poller.Poll           // set by setLines, started by Start
	reloadMu sync.Mutex              // one reload at a time
	stopOnce sync.Once               // Shutdown closes the captures once
	ctx      context.Context         // the lines run until it ends; set by Start
	cancel   context.CancelFunc
	// stopDiscovery stops the discovery running (see startDiscovery).
	stopDiscovery context.CancelFunc
	wg            sync.WaitGroup // the lines, and captures closing after them
	serve         chan error
}

// Version is the running build's version, for the metrics' build info;
// the command sets it.
var Version = "dev"

// listening reports whether the gateway's listeners are up.
func (s *Service) listening() bool { return s.started.Load() }

// NewService builds a gateway from cfg. Nothing runs until Start, but
// capture files are created here: an error names the one that failed.
func NewService(cfg *config.Config, log *slog.Logger) (*Service, error) {
	s := &Service{cfg: cfg, log: log}
	// The handlers of the chain (chain.go lists their order); the lines
	// fill in the router's routes and the handlers' rules (setLines).
	s.Router = New()
	s.Offline = offline.New(log)
	s.Shared = coalesce.New()
	s.Cache = cache.New()
	s.Limits = ratelimit.New(cfg.Server.RateLimit)
	s.Access = access.New(policy(cfg.Access))
	s.Checks = validate.New()
	s.Self = selfunit.New(byte(cfg.Server.SelfUnit), selfunit.Sources{Version: Version, Started: time.Now(),
		Lines: s.selfLines, Online: func(u byte) bool { st, _ := s.Offline.State(u); return st == offline.Online }})
	s.Access.Reach = s.Router.BroadcastReach // a broadcast is a write to every unit it reaches
	s.Cache.Offline = s.Offline.Offline
	s.Agent = poller.New(s.Cache, log) // agent mode's polls enter the chain at the cache
	s.Router.SetPriorityClients(cfg.Server.PriorityNets)
	if _, err := s.setLines(cfg); err != nil {
		return nil, err
	}
	s.Metrics = metrics.New(metrics.Sources{
		Version:   Version,
		Lines:     s.Lines,
		Offline:   s.Offline,
		Units:     s.unitStates,
		Polls:     s.Agent.LineStats,
		Listeners: map[string]*tcp.Server{},
		Answered: map[string]metrics.Counter{
			"denied": s.Access.Denied, "rate-limited": s.Limits.Limited, "rejected": s.Checks.Rejected,
		},
	}, s.listening)
	s.Status = status.New(status.Sources{Lines: s.statusLines, Units: s.unitStates, Listeners: map[string]*tcp.Server{},
		MaxStreams: cfg.Metrics.MaxStreams, MaxStreamsPerIP: cfg.Metrics.MaxStreamsPerIP})
	handler := s.chain(log, cfg.Metrics.Listen != "")
	if cfg.MQTT.On() {
		spCfg, blocks, err := sparkplugConfig(cfg.MQTT, cfg.Bus, log)
		if err != nil {
			s.closeCaptures()
			return nil, err
		}
		// Its writes go through the whole chain, like a client's.
		s.Node = sparkplug.New(spCfg, blocks, handler, s.Offline.Offline, log)
		s.Agent.OnResult = s.Node.Polled
		s.Metrics.AddCounters(sparkplugCounters(s.Node)...)
	}
	for _, sl := range cfg.SlaveLine {
		s.Slaves = append(s.Slaves, newSlaveLine(sl, handler, log))
	}
	if len(s.Slaves) > 0 {
		s.Metrics.AddCounters(slaveCounters(s.Slaves)...)
	}
	server := func() *tcp.Server {
		return &tcp.Server{
			Handler:       handler,
			MaxConns:      cfg.Server.MaxConns,
			IdleTimeout:   cfg.Server.IdleTimeout.Duration,
			Allow:         cfg.Server.AllowNets,
			MaxConnsPerIP: cfg.Server.MaxConnsPerIP,
			Log:           log,
		}
	}
	if cfg.Server.Listen != "" {
		s.Server = server()
		s.Metrics.AddListener("plain", s.Server)
		s.Status.AddListener("plain", s.Server)
	}
	if cfg.Server.RTUListen != "" {
		s.RTU = server()
		s.RTU.Framing = rtuovertcp.Framing{}
		s.Metrics.AddListener("rtu", s.RTU)
		s.Status.AddListener("rtu", s.RTU)
	}
	if t := cfg.Server.TLS; t.Listen != "" {
		certs, err := mbsec.LoadCerts(t.Cert, t.Key, t.ClientCA)
		if err != nil {
			s.closeCaptures()
			return nil, err
		}
		s.Certs, s.TLS = certs, server()
		s.Metrics.AddListener("tls", s.TLS)
		s.Status.AddListener("tls", s.TLS)
		s.TLS.TLS = certs.TLSConfig()
		s.TLS.Identify = func(cs tls.ConnectionState) (string, string, error) {
			id, err := mbsec.Identify(cs)
			return id.Role, id.Peer, err
		}
	}
	return s, nil
}

// closeCaptures closes the running lines' capture files, once the lines
// are stopped.
func (s *Service) closeCaptures() {
	for _, l := range s.current() {
		if l.rec != nil {
			if err := l.rec.Close(); err != nil {
				s.log.Error("closing capture", "err", err)
			}
		}
	}
}

// Start opens the listeners and starts the lines and the servers. A
// line whose port cannot be opened is not fatal: it retries in the
// background and its units get 0x0A meanwhile. A listen error is
// returned. The address returned is the plain listener's (nil if there
// is none); TLSAddr and RTUAddr are the TLS and RTU over TCP ones'.
func (s *Service) Start() (net.Addr, error) {
	listeners := []struct {
		key, addr, what string
		srv             *tcp.Server
		bound           *net.Addr
		l               net.Listener
	}{
		{"server.listen", s.cfg.Server.Listen, "gateway listening", s.Server, nil, nil},
		{"server.tls.listen", s.cfg.Server.TLS.Listen, "gateway listening, Modbus/TCP Security", s.TLS, &s.TLSAddr, nil},
		{"server.rtu_listen", s.cfg.Server.RTUListen, "gateway listening, RTU over TCP", s.RTU, &s.RTUAddr, nil},
	}
	closeAll := func() {
		for _, l := range listeners {
			if l.l != nil {
				l.l.Close()
			}
		}
	}
	for i := range listeners {
		l := &listeners[i]
		if l.srv == nil {
			continue
		}
		var err error
		if l.l, err = net.Listen("tcp", l.addr); err != nil {
			closeAll()
			return nil, fmt.Errorf("listen on %s (%s): %w", l.addr, l.key, err)
		}
		if l.bound != nil {
			*l.bound = l.l.Addr()
		}
	}
	var metricsL net.Listener
	if addr := s.cfg.Metrics.Listen; addr != "" {
		var err error
		if metricsL, err = net.Listen("tcp", addr); err != nil {
			closeAll()
			return nil, fmt.Errorf("listen on %s (metrics.listen): %w", addr, err)
		}
		s.MetricsAddr = metricsL.Addr()
	}
	s.reloadMu.Lock()
	s.ctx, s.cancel = context.WithCancel(context.Background())
	for _, l := range s.current() {
		s.wg.Go(func() { l.bus.Run(s.ctx) })
	}
	if s.Node != nil {
		s.Node.Start()
	}
	for _, sl := range s.Slaves {
		s.wg.Go(func() { sl.Run(s.ctx) })
	}
	s.Agent.Set(s.polls)
	s.startDiscovery()
	s.reloadMu.Unlock()
	s.serve = make(chan error, len(listeners))
	var addr net.Addr // the plain listener's
	for _, l := range listeners {
		if l.l == nil {
			continue
		}
		if l.bound == nil {
			addr = l.l.Addr()
		}
		go func() { s.serve <- l.srv.Serve(l.l) }()
		s.log.Info(l.what, "addr", l.l.Addr().String(), "lines", len(s.current()))
	}
	if metricsL != nil {
		mux, mh := http.NewServeMux(), s.Metrics.HTTP(s.cfg.Metrics.Pprof)
		mux.Handle("/", s.Status.HTTP()) // the status page and its events
		for _, p := range []string{"/metrics", "/healthz", "/readyz", "/debug/pprof/"} {
			mux.Handle(p, mh)
		}
		if s.OnReload != nil {
			mux.HandleFunc("POST "+ReloadPath, s.serveReload)
		}
		// Idle connections are closed, so a client that opens many and
		// leaves them cannot hold the listener's memory.
		s.http = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: time.Minute}
		if wc := s.cfg.Metrics.WebConfig; wc != "" {
			// exporter-toolkit puts its TLS and basic auth in front of
			// every path, reading the file again on every request and
			// connection.
			flags := &web.FlagConfig{WebConfigFile: &wc, WebListenAddresses: &[]string{s.MetricsAddr.String()}, WebSystemdSocket: new(bool)}
			go func() {
				if err := web.Serve(metricsL, s.http, flags, s.log.With("listener", "metrics")); err != nil && !errors.Is(err, http.ErrServerClosed) {
					s.log.Error("metrics listener stopped", "addr", s.MetricsAddr.String(), "err", err)
				}
			}()
		} else {
			go s.http.Serve(metricsL)
		}
		s.log.Info("metrics and health checks listening", "addr", s.MetricsAddr.String(), "paths", "/metrics /healthz /readyz", "web_config", s.cfg.Metrics.WebConfig)
		if s.cfg.Metrics.Pprof && !localHost(s.cfg.Metrics.Listen) {
			s.log.Warn("pprof is served to every client that reaches metrics.listen: it shows the process's internals; keep metrics.listen on loopback while metrics.pprof is on",
				"addr", s.MetricsAddr.String())
		}
	}
	s.started.Store(true)
	return addr, nil
}

// ReloadCerts reads the TLS listener's certificate files again (on
// SIGHUP); new connections get them, open ones keep theirs.
func (s *Service) ReloadCerts() error {
	if s.Certs == nil {
		return nil
	}
	return s.Certs.Reload()
}

// Done returns a channel that receives a server's error if it stops
// serving on its own.
func (s *Service) Done() <-chan error { return s.serve }

// Shutdown stops in reverse order: the servers stop accepting and let
// transactions in flight answer (until ctx ends), then the lines close
// their ports.
func (s *Service) Shutdown(ctx context.Context) error {
	s.started.Store(false)
	var err error
	if s.http != nil {
		s.http.Shutdown(ctx)
	}
	for _, srv := range []*tcp.Server{s.Server, s.TLS, s.RTU} {
		if srv != nil {
			err = errors.Join(err, srv.Shutdown(ctx))
		}
	}
	s.Agent.Stop() // a poll on the line finishes first
	if s.Node != nil {
		s.Node.Stop() // NDEATH
	}
	if s.cancel != nil {
		s.cancel()
	}
	s.reloadMu.Lock()
	s.wg.Wait()
	s.stopOnce.Do(s.closeCaptures)
	s.reloadMu.Unlock()
	s.log.Info("gateway stopped")
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("shutdown: transactions still in flight were cut off: %w", err)
	}
	return err
}

// Reload applies what of cfg can change while the gateway serves, with
// every client staying connected: the lines (added, removed, or changed:
// a changed line finishes its transaction in flight, then reopens with
// its queue kept), the units and devices on them with their offline,
// cache and shared-read rules and their polls, the access rules,
// rate_limit, priority_clients and the TLS certificate files. It returns
// what it applied, and what differs from the running configuration but
// needs a restart (the listeners and their limits, the metrics listener,
// the slave lines, the Sparkplug node, the log's format and file). cfg must have
// passed config.Parse; on an error nothing has changed. The log level is
// the caller's, who made the logger.
func (s *Service) Reload(cfg *config.Config) (applied, needRestart []string, err error) {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	if s.Certs != nil && cfg.Server.TLS.Listen != "" {
		if err := s.ReloadCerts(); err != nil {
			return nil, nil, err
		}
		applied = append(applied, "server.tls files")
	}
	changes, err := s.setLines(cfg)
	if err != nil {
		return nil, nil, err
	}
	s.startDiscovery() // the units a reload added, or moved to another line
	applied = append(applied, changes...)
	s.Access.SetPolicy(policy(cfg.Access))
	s.Limits.SetRate(cfg.Server.RateLimit)
	s.Self.SetUnit(byte(cfg.Server.SelfUnit))
	s.Router.SetPriorityClients(cfg.Server.PriorityNets)
	applied = append(applied, "access", "server.rate_limit", "server.priority_clients", "server.self_unit")
	old := s.cfg
	for _, c := range []struct {
		key  string
		same bool
	}{
		{"server.listen", old.Server.Listen == cfg.Server.Listen},
		{"server.tls", old.Server.TLS == cfg.Server.TLS},
		{"server.rtu_listen", old.Server.RTUListen == cfg.Server.RTUListen},
		{"server.max_conns", old.Server.MaxConns == cfg.Server.MaxConns},
		{"server.idle_timeout", old.Server.IdleTimeout == cfg.Server.IdleTimeout},
		{"server.allow", reflect.DeepEqual(old.Server.AllowNets, cfg.Server.AllowNets)},
		{"server.max_conns_per_ip", old.Server.MaxConnsPerIP == cfg.Server.MaxConnsPerIP},
		{"metrics", old.Metrics == cfg.Metrics},
		{"slave_line", reflect.DeepEqual(old.SlaveLine, cfg.SlaveLine)},
		{"mqtt, and the Sparkplug devices and values of [[bus.poll]]", reflect.DeepEqual(old.MQTT, cfg.MQTT) && reflect.DeepEqual(sparkplugDevices(old), sparkplugDevices(cfg))},
		{"log.format, log.file", old.Log.Format == cfg.Log.Format && old.Log.File == cfg.Log.File},
	} {
		if !c.same {
			needRestart = append(needRestart, c.key)
		}
	}
	return applied, needRestart, nil
}

// sparkplugDevices is what of cfg's polls the edge node was built from.
func sparkplugDevices(cfg *config.Config) map[string][]config.Poll {
	devs := make(map[string][]config.Poll)
	for _, b := range cfg.Bus {
		for _, p := range b.Poll {
			if len(p.Value) > 0 {
				p.Interval = config.Duration{}
				devs[b.Name] = append(devs[b.Name], p)
			}
		}
	}
	return devs
}

// sparkplugCounters are the edge node's counters, for Prometheus.
func sparkplugCounters(n *sparkplug.Node) []metrics.Named {
	st := &n.Stats
	return []metrics.Named{
		{Name: "mcpgw_mqtt_published_total", Help: "Sparkplug messages published to the MQTT broker.", Value: st.Published.Load},
		{Name: "mcpgw_mqtt_buffer_dropped_total", Help: "Sparkplug messages dropped, the buffer (mqtt.buffer) or the store (mqtt.store_max_mb) full while the broker was away.", Value: st.Dropped.Load},
		{Name: "mcpgw_mqtt_sessions_total", Help: "MQTT sessions begun: births published, each with a fresh bdSeq.", Value: st.Sessions.Load},
		{Name: "mcpgw_sparkplug_writes_total", Help: "Sparkplug DCMD writes, by outcome.", Labels: []string{"outcome", "ok"}, Value: st.WritesOK.Load},
		{Name: "mcpgw_sparkplug_writes_total", Help: "Sparkplug DCMD writes, by outcome.", Labels: []string{"outcome", "failed"}, Value: st.WritesFailed.Load},
	}
}

// slaveCounters are the slave lines' counters, for Prometheus.
func slaveCounters(lines []*slaveline.Line) []metrics.Named {
	var cs []metrics.Named
	const help = "Requests from a slave line's master for its units, by what became of them: answered, silent (the gateway could not serve them: 0x0A, 0x0B), late (the answer came after the master's timeout, not sent)."
	for _, l := range lines {
		for _, c := range []struct {
			outcome string
			v       func(slaveline.Stats) uint64
		}{
			{"answered", func(s slaveline.Stats) uint64 { return s.Answered }},
			{"silent", func(s slaveline.Stats) uint64 { return s.Silent }},
			{"late", func(s slaveline.Stats) uint64 { return s.Late }},
		} {
			cs = append(cs, metrics.Named{Name: "mcpgw_slave_line_requests_total", Help: help,
				Labels: []string{"slave_line", l.Name(), "outcome", c.outcome}, Value: func() uint64 { return c.v(l.Stats()) }})
		}
	}
	return cs
}
