package status

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/mcpgw/mcpgw/pkg/chain/offline"
	"github.com/mcpgw/mcpgw/pkg/request"
	"github.com/mcpgw/mcpgw/pkg/rtu"
	"github.com/mcpgw/mcpgw/pkg/tcp"
	"github.com/mcpgw/mcpgw/pkg/trace"
)

// TestPageAndEvents: a transaction is on the page it renders, and a
// transaction made while a page listens reaches it as an event.
func TestPageAndEvents(t *testing.T) {
	s := New(Sources{Listeners: map[string]*tcp.Server{}})
	h := s.Middleware(request.HandlerFunc(func(_ context.Context, r *request.Request, dst []byte) []byte {
		r.Line, r.Attempts = "l1", 1
		return append(dst, r.PDU...)
	}))
	serve := func(id trace.ID, unit byte) {
		h.ServeModbus(context.Background(), &request.Request{Trace: id, Unit: unit, PDU: []byte{3, 0, 0, 0, 1}, Client: "10.0.0.9:5000"}, nil)
	}
	serve(1234, 7)
	srv := httptest.NewServer(s.HTTP())
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{trace.ID(1234).String(), "10.0.0.9:5000", `<td class="num">7</td>`} {
		if !strings.Contains(string(body), want) {
			t.Errorf("page lacks %q", want)
		}
	}
	ev, err := srv.Client().Get(srv.URL + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer ev.Body.Close()
	rd := bufio.NewReader(ev.Body)
	rd.ReadString('\n') // the comment line that opens the stream
	for deadline := time.Now().Add(5 * time.Second); ; {
		s.mu.Lock()
		subscribed := len(s.subs) > 0
		s.mu.Unlock()
		if subscribed || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	serve(99999, 8)
	for {
		line, err := rd.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(line, "data: ") {
			if !strings.Contains(line, `"trace":"`+trace.ID(99999).String()+`"`) || !strings.Contains(line, `"unit":8`) {
				t.Fatalf("event %s", line)
			}
			return
		}
	}
}

// TestStreamLimits: live streams are capped from one address and in all;
// a refused page gets 429 and its connection closed; a stream with
// nothing to send ends, and its place is free again.
func TestStreamLimits(t *testing.T) {
	s := New(Sources{Listeners: map[string]*tcp.Server{}, MaxStreams: 3, MaxStreamsPerIP: 2})
	s.idle = 300 * time.Millisecond
	srv := httptest.NewServer(s.HTTP())
	defer srv.Close()
	open := func(from string) (*http.Response, error) {
		c := &http.Client{Transport: &http.Transport{DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}).DialContext}}
		return c.Get(srv.URL + "/events")
	}
	expect := func(from string, code int) *http.Response {
		t.Helper()
		resp, err := open(from)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != code {
			t.Fatalf("stream from %s: %s, want %d", from, resp.Status, code)
		}
		if code == http.StatusTooManyRequests {
			if !resp.Close || resp.Header.Get("Retry-After") == "" {
				t.Fatalf("refused, but the connection stays (%v) or no Retry-After", resp.Close)
			}
			b, _ := io.ReadAll(resp.Body)
			if !strings.Contains(string(b), "max_streams_per_ip") {
				t.Fatalf("refusal does not name the key: %s", b)
			}
			resp.Body.Close()
		}
		return resp
	}
	a1, a2 := expect("127.0.0.1", 200), expect("127.0.0.1", 200)
	expect("127.0.0.1", http.StatusTooManyRequests) // per address
	b1 := expect("127.0.0.2", 200)
	expect("127.0.0.3", http.StatusTooManyRequests) // in all
	if n := s.Streams(); n != 3 {
		t.Fatalf("%d streams open, want 3", n)
	}
	// Idle streams end: the server closes them.
	for _, r := range []*http.Response{a1, a2, b1} {
		done := make(chan error, 1)
		go func() { _, err := io.ReadAll(r.Body); done <- err }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("an idle stream was not ended")
		}
		r.Body.Close()
	}
	for end := time.Now().Add(2 * time.Second); s.Streams() > 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("%d streams still counted", s.Streams())
		}
	}
	expect("127.0.0.1", 200).Body.Close()
}

// TestAPI: /api/status counts each transaction that reached a line by
// kind, for its unit minute by minute; units come offline first, then
// failing, then not routed, then the rest; answers from the cache and
// refusals before the line are not the line's.
func TestAPI(t *testing.T) {
	since := time.Now().Add(-time.Minute)
	s := New(Sources{Listeners: map[string]*tcp.Server{}, Units: func() []offline.Unit {
		return []offline.Unit{
			{Line: "l1", Unit: 1, State: offline.Online},
			{Line: "l1", Unit: 2, State: offline.Offline, Since: since},
			{Line: "l1", Unit: 3, State: offline.Unseen},
			{Line: "l1", Unit: 4, State: offline.Online},
		}
	}})
	h := s.Middleware(request.HandlerFunc(func(_ context.Context, r *request.Request, dst []byte) []byte {
		switch r.Client {
		case "crc", "unexpected", "silent":
			r.Line = "l1"
			r.Outcome = request.Timeout
			r.Err = map[string]error{"crc": rtu.ErrBadCRC, "unexpected": fmt.Errorf("heard: %w", rtu.ErrUnexpected), "silent": nil}[r.Client]
			return append(dst, r.PDU[0]|0x80, 0x0B)
		case "offline":
			r.Line, r.Outcome = "l1", request.Offline
			return append(dst, r.PDU[0]|0x80, 0x0B)
		case "cache":
			r.Line, r.Outcome = "l1", request.Cached
			return append(dst, r.PDU...)
		case "noroute":
			r.Outcome = request.NoRoute
			return append(dst, r.PDU[0]|0x80, 0x0A)
		}
		r.Line = "l1"
		return append(dst, r.PDU...)
	}))
	do := func(client string, unit byte) {
		h.ServeModbus(context.Background(), &request.Request{Unit: unit, PDU: []byte{3, 0, 0, 0, 1}, Client: client}, nil)
	}
	for range 3 {
		do("ok", 1)
		do("ok", 4)
	}
	do("crc", 1)
	do("unexpected", 1)
	do("silent", 1)
	do("offline", 2)
	do("cache", 4)
	do("noroute", 50)

	srv := httptest.NewServer(s.HTTP())
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL + "/api/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var a API
	if err := json.NewDecoder(resp.Body).Decode(&a); err != nil {
		t.Fatal(err)
	}
	var order []string
	for _, u := range a.Units {
		order = append(order, fmt.Sprintf("%d:%s", u.Unit, u.State))
	}
	if got := strings.Join(order, " "); got != "2:offline 1:online 50:unrouted 3:unseen 4:online" {
		t.Fatalf("units: %s", got)
	}
	u1 := a.Units[1]
	if u1.Tx != 6 || u1.Failed != 3 || u1.Series == nil || len(u1.Series.Tx) != 60 || u1.Series.Step != 60 {
		t.Fatalf("unit 1: %+v", u1)
	}
	last := 59
	if u1.Series.CRC[last] != 1 || u1.Series.Unexpected[last] != 1 || u1.Series.Timeout[last] != 1 || u1.Series.Tx[last] != 6 {
		t.Fatalf("unit 1's current minute: %+v", u1.Series)
	}
	if u1.P50 == 0 || a.Units[0].Since == "" || a.Units[0].Series.Gateway[last] != 1 {
		t.Fatalf("unit 1's latency %v; unit 2 since %q, gateway %v", u1.P50, a.Units[0].Since, a.Units[0].Series.Gateway)
	}
	if u4 := a.Units[4]; u4.Tx != 3 {
		t.Fatalf("unit 4 counted %d transactions, want 3 (not the cached answer)", u4.Tx)
	}
	if a.Units[3].Series != nil {
		t.Fatalf("unit 3, never asked, has a series: %+v", a.Units[3].Series)
	}
}

// fullHour is a Status after a full hour of ten busy lines over units
// 1-247 (25 a line): on each line a transaction a second, a unit after
// another, and a timeout a minute. The lines are real, their ports
// absent (never opened).
func fullHour(now time.Time) *Status {
	var lines []Line
	for i := range 10 {
		bus := rtu.NewBus(rtu.Config{Name: fmt.Sprintf("line%d", i), Open: func() (rtu.Port, error) { return nil, errors.New("no port") }})
		lines = append(lines, Line{Bus: bus, Port: "/dev/null", Settings: "19200 8E1"})
	}
	var configured []offline.Unit
	for u := 1; u <= 247; u++ {
		configured = append(configured, offline.Unit{Line: fmt.Sprintf("line%d", (u-1)/25), Unit: byte(u), State: offline.Online})
	}
	s := New(Sources{Lines: func() []Line { return lines }, Listeners: map[string]*tcp.Server{}, Units: func() []offline.Unit { return configured }})
	s.start = now.Add(-time.Hour)
	for sec := range 3600 {
		at := now.Add(time.Duration(sec-3599) * time.Second)
		for l := range 10 {
			u := configured[(l*25+sec)%247]
			o := request.OK
			if sec%60 == l {
				o = request.Timeout
			}
			s.record(&request.Request{Unit: u.Unit, Line: u.Line, PDU: []byte{3, 0, 0, 0, 1}}, request.Done{Outcome: o, Start: at, Duration: 3 * time.Millisecond})
		}
	}
	return s
}

// BenchmarkAPIFullHour: /api/status after a full hour (fullHour): the
// time to build and encode it, and its size.
func BenchmarkAPIFullHour(b *testing.B) {
	now := time.Now()
	s := fullHour(now)
	var size int
	b.ReportAllocs()
	for b.Loop() {
		body, _ := json.Marshal(s.API(now))
		size = len(body)
	}
	b.ReportMetric(float64(size), "bytes")
}
