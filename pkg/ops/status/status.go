// Package status is the gateway's page at a glance: each line's last hour
// as sparklines, each configured unit's state and last hour as a strip of
// minutes, the connected clients, and the last transactions scrolling
// live (server-sent events); the same history as JSON at /api/status.
// html/template, inline SVG and plain JavaScript, embedded; no build
// step, no asset from elsewhere.
package status

import (
	"cmp"
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/mcpgw/mcpgw/pkg/chain/offline"
	"github.com/mcpgw/mcpgw/pkg/ops/history"
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
	Lines     func() []Line         // the lines now (a reload changes them)
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
	Kind     string `json:"kind,omitempty"` // how the history counts it (ok, timeout, crc, unexpected, gateway); empty: not at all
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
	kind     history.Kind
	counted  bool // in the history
}

func (r *record) tx() Tx {
	t := Tx{Time: r.at.UTC().Format("15:04:05.000"), Trace: r.trace.String(), Client: r.client, Line: r.line,
		Unit: int(r.unit), FC: int(r.fc), Outcome: r.outcome.String(), Duration: r.d.Round(time.Microsecond).String()}
	if r.counted {
		t.Kind = history.KindNames[r.kind]
	}
	return t
}

// unitKey names a unit on a line.
type unitKey struct {
	line string
	unit byte
}

// unitSeen is what the page knows of a unit from its transactions.
type unitSeen struct {
	hist       history.Unit
	lastAnswer time.Time
	exceptions uint64
}

// kindOf is how the history counts a transaction that reached a line,
// and whether it counts at all: answers from the cache or another
// client's read, broadcasts, and requests refused before the line
// (rejected, denied, rate-limited) are not the line's transactions.
func kindOf(tr *request.Request, o request.Outcome) (history.Kind, bool) {
	switch o {
	case request.OK, request.Exception:
		return history.OK, true
	case request.Timeout:
		switch {
		case errors.Is(tr.Err, rtu.ErrBadCRC):
			return history.CRC, true
		case errors.Is(tr.Err, rtu.ErrUnexpected), errors.Is(tr.Err, rtu.ErrMismatch):
			return history.Unexpected, true
		}
		return history.Timeout, true
	case request.LineDown, request.QueueFull, request.Expired, request.Skipped, request.Offline, request.OverBudget:
		return history.Gateway, true
	}
	return 0, false
}

// Status feeds on transactions and serves the page.
type Status struct {
	src   Sources
	start time.Time

	mu       sync.Mutex
	recent   [keepRecent]record // a ring of the last transactions
	nRecent  int                // transactions recorded in all
	units    map[unitKey]*unitSeen
	lines    map[string]*history.Line
	unrouted map[byte]time.Time       // units clients asked for that no line serves, and when last
	scratch  []history.Span           // API's spans, reused (mu held)
	subs     map[chan record]struct{} // the pages listening for events
	perIP    map[netip.Addr]int       // of them, from each address
	idle     time.Duration            // StreamIdle; shorter in tests

	statesMu sync.Mutex
	states   string    // the units' states as the streams send them (unitStates)
	statesAt time.Time // when they were made
}

const keepRecent = 50

// statesFresh is how long the units' states made for one live stream
// serve the others: a change reaches every page within a second and this.
const statesFresh = 100 * time.Millisecond

// noHistory is a line's history before its first transaction: read only.
var noHistory history.Line

// New makes a Status over src.
func New(src Sources) *Status {
	return &Status{src: src, start: time.Now(), units: map[unitKey]*unitSeen{}, lines: map[string]*history.Line{},
		unrouted: map[byte]time.Time{}, subs: map[chan record]struct{}{}, perIP: map[netip.Addr]int{}, idle: StreamIdle}
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
	rec.kind, rec.counted = kindOf(tr, d.Outcome)
	end := d.Start.Add(d.Duration)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.recent[s.nRecent%keepRecent] = rec
	s.nRecent++
	switch {
	case d.Outcome == request.NoRoute && len(s.unrouted) < 256:
		s.unrouted[tr.Unit] = end
	case tr.Line != "" && rec.counted:
		l := s.lines[tr.Line]
		if l == nil {
			l = new(history.Line) // once a line: the rings are fixed from then on
			s.lines[tr.Line] = l
		}
		l.Add(end, rec.kind, d.Duration)
		k := unitKey{tr.Line, tr.Unit}
		u := s.units[k]
		if u == nil {
			u = new(unitSeen)
			s.units[k] = u
		}
		u.hist.Add(end, rec.kind, d.Duration)
		if rec.kind == history.OK {
			u.lastAnswer = end
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

// view is what the template renders; the lines and units come from
// /api/status.
type view struct {
	Uptime  string
	Clients []clientView
	Recent  []Tx
}

type clientView struct {
	Listener, Addr, Since string
	Requests              uint64
}

func (s *Status) snapshot() view {
	now := time.Now()
	v := view{Uptime: now.Sub(s.start).Round(time.Second).String()}
	for name, srv := range s.src.Listeners {
		for _, c := range srv.Clients() {
			v.Clients = append(v.Clients, clientView{Listener: name, Addr: c.Addr, Since: c.Since.UTC().Format(time.DateTime), Requests: c.Requests})
		}
	}
	slices.SortFunc(v.Clients, func(a, b clientView) int { return int(b.Requests) - int(a.Requests) })
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := s.nRecent - 1; i >= max(0, s.nRecent-keepRecent); i-- {
		v.Recent = append(v.Recent, s.recent[i%keepRecent].tx())
	}
	return v
}

// API is /api/status: each line's last hour second by second, and each
// configured unit (and each unit asked for that no line serves) with its
// state and its last hour minute by minute. Offline units come first,
// then those with failures in the hour, most first, then the rest by
// line and unit.
type API struct {
	Now    int64     `json:"now"`    // unix second: the last point of every series
	Uptime float64   `json:"uptime"` // seconds since the gateway started
	Lines  []APILine `json:"lines"`
	Units  []APIUnit `json:"units"`
}

// APILine is a line on /api/status.
type APILine struct {
	Name      string    `json:"name"`
	State     string    `json:"state"` // up or down
	Since     string    `json:"since,omitempty"`
	Port      string    `json:"port"`
	Settings  string    `json:"settings"`
	Queue     int       `json:"queue"`
	CRCErrors uint64    `json:"crc_errors"` // since start, attempts included
	Timeouts  uint64    `json:"timeouts"`
	Series    APISeries `json:"series"` // a point a second, from the gateway's start or an hour ago
}

// APIUnit is a unit on /api/status.
type APIUnit struct {
	Unit       int        `json:"unit"`
	Line       string     `json:"line"`
	State      string     `json:"state"`           // online, offline, unseen or unrouted
	Since      string     `json:"since,omitempty"` // offline since (RFC 3339)
	LastAnswer string     `json:"last_answer,omitempty"`
	Exceptions uint64     `json:"exceptions"`
	Tx         uint64     `json:"tx"`     // in the last hour
	Failed     uint64     `json:"failed"` // of them
	P50        float64    `json:"p50_ms"` // latency over the last hour; 0: no answer
	P99        float64    `json:"p99_ms"`
	Series     *APISeries `json:"series"` // 60 clock minutes, older first, the last the current one; null: no transaction in the hour
}

// APISeries are counts over consecutive spans, older first, the last
// ending at API.Now.
type APISeries struct {
	Step       int       `json:"step"`  // seconds a point
	Start      int64     `json:"start"` // unix second the first point ends at
	Tx         []uint64  `json:"tx"`
	Failed     []uint64  `json:"failed"`
	Timeout    []uint64  `json:"timeout,omitempty"` // a kind without a failure in the series is left out
	CRC        []uint64  `json:"crc,omitempty"`
	Unexpected []uint64  `json:"unexpected,omitempty"`
	Gateway    []uint64  `json:"gateway,omitempty"`
	P50        []float64 `json:"p50_ms,omitempty"` // 0: no answer in the span
	P99        []float64 `json:"p99_ms,omitempty"`
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func series(spans []history.Span, step int, now time.Time) APISeries {
	n := len(spans)
	a := APISeries{Step: step, Start: now.Unix() - int64((n-1)*step),
		Tx: make([]uint64, n), Failed: make([]uint64, n), Timeout: make([]uint64, n), CRC: make([]uint64, n),
		Unexpected: make([]uint64, n), Gateway: make([]uint64, n), P50: make([]float64, n), P99: make([]float64, n)}
	for i := range spans {
		sp := &spans[i]
		a.Tx[i], a.Failed[i] = sp.Tx, sp.Failed()
		a.Timeout[i], a.CRC[i], a.Unexpected[i], a.Gateway[i] = sp.Kinds[history.Timeout], sp.Kinds[history.CRC], sp.Kinds[history.Unexpected], sp.Kinds[history.Gateway]
		a.P50[i], a.P99[i] = ms(sp.Quantile(0.5)), ms(sp.Quantile(0.99))
	}
	for _, k := range []*[]uint64{&a.Timeout, &a.CRC, &a.Unexpected, &a.Gateway} {
		if !slices.ContainsFunc(*k, func(v uint64) bool { return v != 0 }) {
			*k = nil
		}
	}
	return a
}

// API returns what /api/status serves, as of now.
func (s *Status) API(now time.Time) API {
	up := now.Sub(s.start)
	a := API{Now: now.Unix(), Uptime: up.Seconds(), Lines: []APILine{}, Units: []APIUnit{}}
	seconds := int(min(history.Seconds, max(1, now.Unix()-s.start.Unix()+1)))
	var lines []Line
	if s.src.Lines != nil {
		lines = s.src.Lines()
	}
	var configured []offline.Unit
	if s.src.Units != nil {
		configured = s.src.Units()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range lines {
		st, name := l.Bus.Stats(), l.Bus.Name()
		al := APILine{Name: name, Port: l.Port, Settings: l.Settings, Queue: l.Bus.Queued(), CRCErrors: st.CRCErrors, Timeouts: st.Timeouts, State: "down"}
		if l.Bus.Up() {
			al.State = "up"
		}
		if t := l.Bus.Since(); !t.IsZero() {
			al.Since = t.UTC().Format(time.RFC3339)
		}
		h := s.lines[name]
		if h == nil {
			h = &noHistory // no transaction yet
		}
		s.scratch = h.Spans(s.scratch, now, 1, seconds)
		al.Series = series(s.scratch, 1, now)
		a.Lines = append(a.Lines, al)
	}
	// A unit's minutes are clock minutes, the last one the current.
	endOfMinute := now.Truncate(time.Minute).Add(59 * time.Second)
	for _, cu := range configured {
		au := unitState(cu)
		if u := s.units[unitKey{cu.Line, cu.Unit}]; u != nil {
			s.scratch = u.hist.Spans(s.scratch, endOfMinute, 60, 60)
			mins := s.scratch
			var hour history.Span
			for i := range mins {
				hour.Add(&mins[i])
			}
			au.Tx, au.Failed = hour.Tx, hour.Failed()
			au.P50, au.P99 = ms(hour.Quantile(0.5)), ms(hour.Quantile(0.99))
			au.Exceptions = u.exceptions
			if !u.lastAnswer.IsZero() {
				au.LastAnswer = u.lastAnswer.UTC().Format(time.RFC3339Nano)
			}
			if hour.Tx > 0 {
				sr := series(mins, 60, endOfMinute)
				au.Series = &sr
			}
		}
		a.Units = append(a.Units, au)
	}
	for u, at := range s.unrouted {
		if now.Sub(at) < time.Hour {
			a.Units = append(a.Units, APIUnit{Unit: int(u), State: "unrouted"})
		}
	}
	rank := func(u *APIUnit) int {
		switch {
		case u.State == "offline":
			return 0
		case u.Failed > 0:
			return 1
		case u.State == "unrouted":
			return 2
		}
		return 3
	}
	slices.SortStableFunc(a.Units, func(x, y APIUnit) int {
		return cmp.Or(cmp.Compare(rank(&x), rank(&y)), cmp.Compare(y.Failed, x.Failed), strings.Compare(x.Line, y.Line), cmp.Compare(x.Unit, y.Unit))
	})
	return a
}

// countsOnly leaves each series with its transactions and failures: what
// the page draws (/api/status?counts=1), less than half the weight.
func (a *API) countsOnly() {
	strip := func(sr *APISeries) {
		sr.Timeout, sr.CRC, sr.Unexpected, sr.Gateway, sr.P50, sr.P99 = nil, nil, nil, nil, nil, nil
	}
	for i := range a.Lines {
		strip(&a.Lines[i].Series)
	}
	for i := range a.Units {
		if a.Units[i].Series != nil {
			strip(a.Units[i].Series)
		}
	}
}

// unitStates is each configured unit's state as JSON, as the live
// streams send it when one changes (each looks once a second): made at
// most every statesFresh for all of them, not once a stream.
func (s *Status) unitStates(now time.Time) string {
	s.statesMu.Lock()
	defer s.statesMu.Unlock()
	if now.Sub(s.statesAt) >= statesFresh || now.Before(s.statesAt) {
		var out []APIUnit
		if s.src.Units != nil {
			for _, cu := range s.src.Units() {
				out = append(out, unitState(cu))
			}
		}
		b, _ := json.Marshal(out)
		s.states, s.statesAt = string(b), now
	}
	return s.states
}

// unitState is a configured unit as the page names it: its id, line,
// state, and since when it is offline.
func unitState(cu offline.Unit) APIUnit {
	au := APIUnit{Unit: int(cu.Unit), Line: cu.Line, State: cu.State.String()}
	if cu.State == offline.Offline && !cu.Since.IsZero() {
		au.Since = cu.Since.UTC().Format(time.RFC3339)
	}
	return au
}

// HTTP serves the page at /, the transactions as server-sent events at
// /events (and the units' states when one changes, as "units" events),
// and the history as JSON at /api/status.
func (s *Status) HTTP() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		if err := page.Execute(w, s.snapshot()); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
		}
	})
	mux.HandleFunc("GET /events", s.events)
	mux.HandleFunc("GET /api/status", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-cache")
		a := s.API(time.Now())
		if r.URL.Query().Get("counts") == "1" {
			a.countsOnly()
		}
		json.NewEncoder(w).Encode(a)
	})
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
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var states string // the units' states last sent
	for {
		select {
		case <-r.Context().Done():
			return
		case <-idle.C:
			return
		case <-tick.C:
			// A unit's state changes without a transaction of its own
			// (the offline rule): sent once a second when one changed.
			b := s.unitStates(time.Now())
			if b == states {
				continue
			}
			if !send("event: units\ndata: " + b + "\n\n") {
				return
			}
			states = b
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
