// Package metrics is the gateway's Prometheus view: transactions counted
// and timed by a request.Handler in the chain, and the lines', units' and
// listeners' counters read at each scrape, served with /healthz and
// /readyz on a listener of their own.
package metrics

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/pprof"
	"runtime"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/mcpgw/mcpgw/pkg/chain/offline"
	"github.com/mcpgw/mcpgw/pkg/request"
	"github.com/mcpgw/mcpgw/pkg/rtu"
	"github.com/mcpgw/mcpgw/pkg/tcp"
)

// byteLabel is each byte's decimal label value, made once: no allocation
// per transaction.
var byteLabel = func() (l [256]string) {
	for i := range l {
		l[i] = strconv.Itoa(i)
	}
	return l
}()

// Counter is anything that counts one kind of refusal or denial.
type Counter func() uint64

// Sources are what the scrape reads. Nil parts are left out.
type Sources struct {
	Version   string
	Lines     func() []*rtu.Bus // the lines now (a reload changes them)
	Offline   *offline.Handler
	Polls     func(line string) (ok, failed uint64) // agent mode's polls
	Listeners map[string]*tcp.Server                // by name: "plain", "tls"
	// Units are the configured units and their states.
	Units func() []offline.Unit
	// Requests answered at once by a handler, by the handler's name
	// ("denied", "rate-limited", "rejected"); they are transactions too,
	// counted with their outcome, and here as totals.
	Answered map[string]Counter
}

// Metrics is the registry and the transaction handler that feeds it.
type Metrics struct {
	reg  *prometheus.Registry
	tx   *prometheus.CounterVec
	exc  *prometheus.CounterVec
	dur  *prometheus.HistogramVec
	src  Sources
	up   func() bool // the listeners listen
	desc descs
}

type descs struct {
	frames, crc, unexpected, short, noise, late, retries, downs, lineUp, queue,
	offline, online, offlineAnswered, polls, connsOpen, accepted, refused, handshakes, answered, build, unitState *prometheus.Desc
}

// New makes the registry. up reports whether the gateway listens.
func New(src Sources, up func() bool) *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry(), src: src, up: up}
	m.tx = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mcpgw_transactions_total",
		Help: "Transactions by line, unit, function code and outcome (unit and fc are empty for requests that reached no line).",
	}, []string{"line", "unit", "fc", "outcome"})
	m.exc = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mcpgw_exceptions_total",
		Help: "Exception answers by who made them (device: the device's own; gateway: the gateway's) and code.",
	}, []string{"source", "code"})
	m.dur = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "mcpgw_transaction_duration_seconds",
		Help:    "Transaction duration, from the request's arrival to its answer, by line.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 15), // 0.5 ms to 8 s
	}, []string{"line"})
	line := []string{"line"}
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, labels, nil)
	}
	m.desc = descs{
		frames:          d("mcpgw_line_frames_total", "Frames sent on the line, retries included.", line...),
		crc:             d("mcpgw_line_crc_errors_total", "Attempts that saw a frame with a bad CRC.", line...),
		unexpected:      d("mcpgw_line_unexpected_frames_total", "Attempts that saw a frame from another unit, to another function, or not fitting the request.", line...),
		short:           d("mcpgw_line_short_frames_total", "Attempts that saw a frame cut short by silence.", line...),
		noise:           d("mcpgw_line_noise_bytes_total", "Bytes discarded while waiting for answers.", line...),
		late:            d("mcpgw_line_late_bytes_total", "Bytes drained before a transmission: late answers and stray bytes.", line...),
		retries:         d("mcpgw_line_retries_total", "Frames sent again after an attempt failed.", line...),
		downs:           d("mcpgw_line_downs_total", "Times the line's port failed or could not be opened.", line...),
		lineUp:          d("mcpgw_line_up", "1 while the line's port is open.", line...),
		queue:           d("mcpgw_line_queue_depth", "Requests waiting in the line's queue.", line...),
		offline:         d("mcpgw_unit_offline_transitions_total", "Units of the line marked offline.", line...),
		online:          d("mcpgw_unit_online_transitions_total", "Units of the line back online.", line...),
		offlineAnswered: d("mcpgw_unit_offline_answers_total", "Requests to offline units of the line answered 0x0B without touching it.", line...),
		polls:           d("mcpgw_line_polls_total", "Agent mode's polls of the line ([[bus.poll]]), by outcome: ok, or failed (no answer, an exception, the unit offline).", "line", "outcome"),
		connsOpen:       d("mcpgw_tcp_connections_open", "Open client connections.", "listener"),
		accepted:        d("mcpgw_tcp_connections_accepted_total", "Client connections accepted, those then refused included.", "listener"),
		refused:         d("mcpgw_tcp_connections_refused_total", "Client connections closed at accept or at the TLS handshake, by reason.", "listener", "reason"),
		handshakes:      d("mcpgw_tls_handshake_failures_total", "TLS handshakes that failed or presented an unusable certificate.", "listener"),
		answered:        d("mcpgw_requests_answered_at_once_total", "Requests answered without reaching a line, by the handler that answered.", "by"),
		build:           d("mcpgw_build_info", "The running build.", "version", "goversion"),
		unitState:       d("mcpgw_unit_state", "Each configured unit's state, 1 for the one it is in: online (it answers), offline (found absent or dead: answered 0x0B at once, one probe at a time), unseen (not heard yet).", "line", "unit", "state"),
	}
	m.reg.MustRegister(m.tx, m.exc, m.dur, m)
	return m
}

func (m *Metrics) lines() []*rtu.Bus {
	if m.src.Lines == nil {
		return nil
	}
	return m.src.Lines()
}

// Named is a counter of some other part of the gateway, under its own
// name; Labels are name, value pairs.
type Named struct {
	Name, Help string
	Labels     []string
	Value      Counter
}

// AddCounters adds counters to the scrape. Counters of one name must
// have the same label names, and come in one call.
func (m *Metrics) AddCounters(cs ...Named) {
	c := &namedCounters{descs: make(map[string]*prometheus.Desc)}
	for _, n := range cs {
		d := c.descs[n.Name]
		if d == nil {
			var names []string
			for i := 0; i+1 < len(n.Labels); i += 2 {
				names = append(names, n.Labels[i])
			}
			d = prometheus.NewDesc(n.Name, n.Help, names, nil)
			c.descs[n.Name] = d
		}
		c.counters = append(c.counters, namedCounter{d, n})
	}
	m.reg.MustRegister(c)
}

// namedCounters is AddCounters' collector.
type namedCounters struct {
	descs    map[string]*prometheus.Desc
	counters []namedCounter
}

type namedCounter struct {
	desc *prometheus.Desc
	Named
}

func (c *namedCounters) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
}

func (c *namedCounters) Collect(ch chan<- prometheus.Metric) {
	for _, n := range c.counters {
		var values []string
		for i := 1; i < len(n.Labels); i += 2 {
			values = append(values, n.Labels[i])
		}
		ch <- prometheus.MustNewConstMetric(n.desc, prometheus.CounterValue, float64(n.Value()), values...)
	}
}

// AddListener adds a listener's counters under name; call it before
// serving.
func (m *Metrics) AddListener(name string, s *tcp.Server) { m.src.Listeners[name] = s }

// Middleware wraps next and counts and times every transaction; put it
// right after the transaction log in the chain.
func (m *Metrics) Middleware(next request.Handler) request.Handler {
	return request.Observe(next, func(_ context.Context, tr *request.Request, d request.Done) {
		unit, fc := "", ""
		if tr.Line != "" { // bounded: only routed requests carry unit and fc
			unit, fc = byteLabel[tr.Unit], byteLabel[tr.PDU[0]]
		}
		m.tx.WithLabelValues(tr.Line, unit, fc, d.Outcome.String()).Inc()
		if d.Exception != 0 {
			source := "gateway"
			if d.Outcome.ByDevice() {
				source = "device"
			}
			m.exc.WithLabelValues(source, byteLabel[d.Exception]).Inc()
		}
		if tr.Line != "" {
			m.dur.WithLabelValues(tr.Line).Observe(d.Duration.Seconds())
		}
	})
}

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	d := m.desc
	for _, x := range []*prometheus.Desc{d.frames, d.crc, d.unexpected, d.short, d.noise, d.late, d.retries, d.downs,
		d.lineUp, d.queue, d.offline, d.online, d.offlineAnswered, d.polls, d.connsOpen, d.accepted, d.refused, d.handshakes, d.answered, d.build, d.unitState} {
		ch <- x
	}
}

// Collect implements prometheus.Collector: it reads the counters now.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	d := m.desc
	counter := func(desc *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(desc, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(desc *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, v, labels...)
	}
	for _, b := range m.lines() {
		st, name := b.Stats(), b.Name()
		counter(d.frames, st.Frames, name)
		counter(d.crc, st.CRCErrors, name)
		counter(d.unexpected, st.Unexpected, name)
		counter(d.short, st.ShortFrame, name)
		counter(d.noise, st.NoiseBytes, name)
		counter(d.late, st.LateBytes, name)
		counter(d.retries, st.Frames-min(st.Frames, st.Requests), name)
		counter(d.downs, st.LineDowns, name)
		up := 0.0
		if b.Up() {
			up = 1
		}
		gauge(d.lineUp, up, name)
		gauge(d.queue, float64(b.Queued()), name)
		if m.src.Offline != nil {
			ost := m.src.Offline.LineStats(name)
			counter(d.offline, ost.WentOffline, name)
			counter(d.online, ost.CameBack, name)
			counter(d.offlineAnswered, ost.Answered, name)
		}
		if m.src.Polls != nil {
			ok, failed := m.src.Polls(name)
			counter(d.polls, ok, name, "ok")
			counter(d.polls, failed, name, "failed")
		}
	}
	if m.src.Units != nil {
		for _, u := range m.src.Units() {
			for _, st := range []offline.State{offline.Online, offline.Offline, offline.Unseen} {
				v := 0.0
				if u.State == st {
					v = 1
				}
				gauge(d.unitState, v, u.Line, byteLabel[u.Unit], st.String())
			}
		}
	}
	for name, s := range m.src.Listeners {
		gauge(d.connsOpen, float64(s.NumConns()), name)
		counter(d.accepted, s.Accepted(), name)
		counter(d.refused, s.Refused(tcp.NotAllowed), name, "not_allowed")
		counter(d.refused, s.Refused(tcp.TooManyFromIP), name, "max_conns_per_ip")
		counter(d.refused, s.Refused(tcp.Full), name, "max_conns")
		counter(d.handshakes, s.HandshakesFailed(), name)
	}
	for by, c := range m.src.Answered {
		counter(d.answered, c(), by)
	}
	gauge(d.build, 1, m.src.Version, runtime.Version())
}

// HTTP serves /metrics, /healthz (200 while the process serves) and
// /readyz (200 when the gateway listens and every line is up; else 503
// with a JSON body naming the lines that are down); with profile, also
// net/http/pprof's /debug/pprof/.
func (m *Metrics) HTTP(profile bool) http.Handler {
	mux := http.NewServeMux()
	if profile {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		type status struct {
			Ready     bool     `json:"ready"`
			Listening bool     `json:"listening"`
			Down      []string `json:"lines_down"`
		}
		st := status{Listening: m.up == nil || m.up(), Down: []string{}}
		for _, b := range m.lines() {
			if !b.Up() {
				st.Down = append(st.Down, b.Name())
			}
		}
		st.Ready = st.Listening && len(st.Down) == 0
		w.Header().Set("Content-Type", "application/json")
		if !st.Ready {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		json.NewEncoder(w).Encode(st)
	})
	return mux
}
