package status

import (
	"bufio"
	"context"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/mcpgw/mcpgw/pkg/tcp"
	"github.com/mcpgw/mcpgw/pkg/trace"
)

// TestPageAndEvents: a transaction is on the page it renders, and a
// transaction made while a page listens reaches it as an event.
func TestPageAndEvents(t *testing.T) {
	s := New(Sources{Listeners: map[string]*tcp.Server{}})
	h := s.Handler(tcp.HandlerFunc(func(_ context.Context, r *tcp.Request, dst []byte) []byte {
		r.Line, r.Attempts = "l1", 1
		return append(dst, r.PDU...)
	}))
	serve := func(id trace.ID, unit byte) {
		h.ServeModbus(context.Background(), &tcp.Request{Trace: id, Unit: unit, PDU: []byte{3, 0, 0, 0, 1}, Client: "10.0.0.9:5000"}, nil)
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
