// Package status is the gateway's page at a glance: each line, each unit
// seen, the connected clients, and the last transactions scrolling live
// (server-sent events). html/template and a few lines of plain
// JavaScript, embedded; no build step.
package status

import (
	"context"
	"embed"
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"net/http"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/mcpgw/mcpgw/pkg/chain/offline"
	"github.com/mcpgw/mcpgw/pkg/request"
	"github.com/mcpgw/mcpgw/pkg/rtu"
	"github.com/mcpgw/mcpgw/pkg/tcp"
	"github.com/mcpgw/mcpgw/pkg/trace"
)

//go:embed page.html
var files embed.FS

var page = template.Must(template.ParseFS(files, "page.html"))

// Line is a serial line and how it is set up, for the page.
type Line struct {
	Bus      *rtu.Bus
	Port     string
	Settings string // such as "19200 8E1"
}

// Sources are what the page shows; nil parts are left out.
type Sources struct {
	Lines     func() []Line // the lines now (a reload changes them)
	Offline   *offline.Handler
	Units     func() []offline.Unit // the configured units and their states
	Listeners map[string]*tcp.Server
	// Live streams (/events) at once, in all and from one client
	// address; beyond them a page is refused (429). 0: no cap.
	MaxStreams, MaxStreamsPerIP int
}

// A live stream ends when its client has not taken an event for
// writeWait (it stopped reading), or when there was none to send for
// StreamIdle; the page's EventSource opens a new one by itself.
const (
	writeWait  = 10 * time.Second
	StreamIdle = 2 * time.Minute
)

// Tx is one transaction as the page shows it.
type Tx struct {
	Time     string `json:"time"`
	Trace    string `json:"trace"`
	Client   string `json:"client"`
	Line     string `json:"line"`
	Unit     int    `json:"unit"`
	FC       int    `json:"fc"`
	Outcome  string `json:"outcome"`
	Duration string `json:"duration"`
}

// record is a transaction as the feed keeps it: raw values, made into
// text only when a page is rendered or an event sent, so that feeding the
// page allocates nothing per transaction.
type record struct {
	at       time.Time
	trace    trace.ID
	client   string
	line     string
	unit, fc byte
	outcome  request.Outcome
	d        time.Duration
}

func (r *record) tx() Tx {
	return Tx{Time: r.at.UTC().Format("15:04:05.000"), Trace: r.trace.String(), Client: r.client, Line: r.line,
		Unit: int(r.unit), FC: int(r.fc), Outcome: r.outcome.String(), Duration: r.d.Round(time.Microsecond).String()}
}

// unitSeen is what the page knows of a unit from its transactions.
type unitSeen struct {
	line       string
	lastAnswer time.Time
	lat        [128]time.Duration // the last answers' latencies, a ring
	n          int
	exceptions uint64
}

// Status feeds on transactions and serves the page.
type Status struct {
	src   Sources
	start time.Time

	mu      sync.Mutex
	recent  [keepRecent]record // a ring of the last transactions
	nRecent int                // transactions recorded in all
	units   map[byte]*unitSeen
	lineTx  map[string]*rate
	subs    map[chan record]struct{} // the pages listening for events
	perIP   map[netip.Addr]int       // of them, from each address
	idle    time.Duration            // StreamIdle; shorter in tests
}

// rate counts a line's transactions and failures in each of the last 60
// seconds: bounded, whatever the rate.
type rate [60]struct {
	sec       int64 // the unix second the counts are for
	n, failed uint32
}

// add counts a transaction at t.
func (r *rate) add(t time.Time, failed bool) {
	sec := t.Unix()
	b := &r[sec%60]
	if b.sec != sec {
		b.sec, b.n, b.failed = sec, 0, 0
	}
	b.n++
	if failed {
		b.failed++
	}
}

// lastMinute returns the transactions and failures of the minute to now.
func (r *rate) lastMinute(now time.Time) (n, failed int) {
	for _, b := range r {
		if now.Unix()-b.sec < 60 {
			n, failed = n+int(b.n), failed+int(b.failed)
		}
	}
	return n, failed
}

const keepRecent = 50

// New makes a Status over src.
func New(src Sources) *Status {
	return &Status{src: src, start: time.Now(), units: map[byte]*unitSeen{}, lineTx: map[string]*rate{},
		subs: map[chan record]struct{}{}, perIP: map[netip.Addr]int{}, idle: StreamIdle}
}

// AddListener adds a listener whose clients the page lists; call it
// before serving.
func (s *Status) AddListener(name string, srv *tcp.Server) { s.src.Listeners[name] = srv }

// Middleware wraps next and feeds the page with every transaction.
func (s *Status) Middleware(next request.Handler) request.Handler {
	return request.Observe(next, func(_ context.Context, tr *request.Request, d request.Done) {
		s.record(tr, d)
	})
}

func (s *Status) record(tr *request.Request, d request.Done) {
	rec := record{at: d.Start, trace: tr.Trace, client: tr.Client, line: tr.Line, unit: tr.Unit, fc: tr.PDU[0], outcome: d.Outcome, d: d.Duration}
	answered := d.Outcome.ByDevice()
	fresh := d.Outcome == request.OK || d.Outcome == request.Exception // the device's answer to this request: its latency
	s.mu.Lock()
	defer s.mu.Unlock()
	s.recent[s.nRecent%keepRecent] = rec
	s.nRecent++
	if tr.Line != "" {
		r := s.lineTx[tr.Line]
		if r == nil {
			r = &rate{}
			s.lineTx[tr.Line] = r
		}
		r.add(d.Start, !answered)
		if fresh {
			u := s.units[tr.Unit]
			if u == nil {
				u = &unitSeen{}
				s.units[tr.Unit] = u
			}
			u.line, u.lastAnswer = tr.Line, d.Start
			u.lat[u.n%len(u.lat)] = d.Duration
			u.n++
			if d.Exception != 0 {
				u.exceptions++
			}
		}
	}
	for ch := range s.subs {
		select {
		case ch <- rec:
		default: // a page that lags misses rows; the gateway does not wait for it
		}
	}
}

// view is what the template renders.
type view struct {
	Uptime  string
	Lines   []lineView
	Units   []unitView
	Clients []clientView
	Recent  []Tx
}

type lineView struct {
	Name, Port, Settings, State, Since string
	PerSecond, FailedPerMinute         string
	Queue                              int
	CRCErrors, Timeouts                uint64
}

type unitView struct {
	Unit             int
	Line, LastAnswer string
	P50, P99         string
	Exceptions       uint64
	State            string // as shown: "offline since 10:42:07"
	Class            string // online, offline or unseen
}

type clientView struct {
	Listener, Addr, Since string
	Requests              uint64
}

func (s *Status) snapshot() view {
	now := time.Now()
	v := view{Uptime: now.Sub(s.start).Round(time.Second).String()}
	s.mu.Lock()
	defer s.mu.Unlock()
	var lines []Line
	if s.src.Lines != nil {
		lines = s.src.Lines()
	}
	for _, l := range lines {
		st, name := l.Bus.Stats(), l.Bus.Name()
		lv := lineView{Name: name, Port: l.Port, Settings: l.Settings, Queue: l.Bus.Queued(),
			CRCErrors: st.CRCErrors, Timeouts: st.Timeouts, State: "down", PerSecond: "0.0", FailedPerMinute: "0"}
		if l.Bus.Up() {
			lv.State = "up"
		}
		if t := l.Bus.Since(); !t.IsZero() {
			lv.Since = t.UTC().Format(time.DateTime) + " UTC"
		}
		if r := s.lineTx[name]; r != nil {
			n, failed := r.lastMinute(now)
			lv.PerSecond = fmt.Sprintf("%.1f", float64(n)/min(60, max(1, now.Sub(s.start).Seconds())))
			lv.FailedPerMinute = fmt.Sprint(failed)
		}
		v.Lines = append(v.Lines, lv)
	}
	// Every configured unit, and those seen that are not (any more).
	listed := map[byte]bool{}
	if s.src.Units != nil {
		for _, cu := range s.src.Units() {
			uv := unitView{Unit: int(cu.Unit), Line: cu.Line, State: cu.State.String(), Class: cu.State.String()}
			if cu.State == offline.Offline && !cu.Since.IsZero() {
				uv.State += " since " + cu.Since.UTC().Format(time.TimeOnly)
			}
			s.seenView(&uv, s.units[cu.Unit], now)
			v.Units = append(v.Units, uv)
			listed[cu.Unit] = true
		}
	}
	for u, seen := range s.units {
		if listed[u] {
			continue
		}
		uv := unitView{Unit: int(u), Line: seen.line, State: "online", Class: "online"}
		if s.src.Offline != nil && s.src.Offline.Offline(u) {
			uv.State, uv.Class = "offline", "offline"
		}
		s.seenView(&uv, seen, now)
		v.Units = append(v.Units, uv)
	}
	slices.SortFunc(v.Units, func(a, b unitView) int { return a.Unit - b.Unit })
	for name, srv := range s.src.Listeners {
		for _, c := range srv.Clients() {
			v.Clients = append(v.Clients, clientView{Listener: name, Addr: c.Addr, Since: c.Since.UTC().Format(time.DateTime), Requests: c.Requests})
		}
	}
	slices.SortFunc(v.Clients, func(a, b clientView) int { return int(b.Requests) - int(a.Requests) })
	for i := s.nRecent - 1; i >= max(0, s.nRecent-keepRecent); i-- {
		v.Recent = append(v.Recent, s.recent[i%keepRecent].tx())
	}
	return v
}

// seenView fills in what the transactions showed of a unit, if any.
func (s *Status) seenView(uv *unitView, seen *unitSeen, now time.Time) {
	if seen == nil || seen.n == 0 {
		return
	}
	k := min(seen.n, len(seen.lat))
	lat := slices.Clone(seen.lat[:k])
	slices.Sort(lat)
	uv.LastAnswer = now.Sub(seen.lastAnswer).Round(time.Millisecond).String() + " ago"
	uv.P50, uv.P99 = lat[k/2].Round(time.Microsecond).String(), lat[k*99/100].Round(time.Microsecond).String()
	uv.Exceptions = seen.exceptions
}

// HTTP serves the page at / and the transactions as server-sent events at
// /events.
func (s *Status) HTTP() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		if err := page.Execute(w, s.snapshot()); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
		}
	})
	mux.HandleFunc("GET /events", s.events)
	return mux
}

// events streams each transaction as it ends, as JSON, until the page
// goes away, stops reading, or has had nothing for StreamIdle; at most
// MaxStreams at once, MaxStreamsPerIP from one address.
func (s *Status) events(w http.ResponseWriter, r *http.Request) {
	var ip netip.Addr
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		ip = ap.Addr().Unmap()
	}
	ch := make(chan record, 64)
	s.mu.Lock()
	full := s.src.MaxStreams > 0 && len(s.subs) >= s.src.MaxStreams ||
		s.src.MaxStreamsPerIP > 0 && s.perIP[ip] >= s.src.MaxStreamsPerIP
	if !full {
		s.subs[ch] = struct{}{}
		s.perIP[ip]++
	}
	s.mu.Unlock()
	if full {
		// Closed after the answer, so that a refused client holds no
		// connection either.
		w.Header().Set("Connection", "close")
		w.Header().Set("Retry-After", "10")
		http.Error(w, fmt.Sprintf("too many live streams (metrics.max_streams %d, max_streams_per_ip %d): close another page, or raise them",
			s.src.MaxStreams, s.src.MaxStreamsPerIP), http.StatusTooManyRequests)
		return
	}
	defer func() {
		s.mu.Lock()
		delete(s.subs, ch)
		if s.perIP[ip]--; s.perIP[ip] <= 0 {
			delete(s.perIP, ip)
		}
		s.mu.Unlock()
	}()
	rc := http.NewResponseController(w)
	send := func(text string) bool {
		rc.SetWriteDeadline(time.Now().Add(writeWait))
		if _, err := io.WriteString(w, text); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	if !send(": mcpgw transactions\n\n") {
		return
	}
	idle := time.NewTimer(s.idle)
	defer idle.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-idle.C:
			return
		case rec := <-ch:
			b, _ := json.Marshal(rec.tx())
			if !send("data: " + string(b) + "\n\n") {
				return
			}
			idle.Reset(s.idle)
		}
	}
}

// Streams returns the number of live streams now.
func (s *Status) Streams() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.subs)
}
