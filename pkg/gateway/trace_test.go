package gateway_test

import (
	"strings"
	"testing"

	"github.com/mcpgw/mcpgw/pkg/tools/sim"
)

// TestTraceFollowsARequest: the transaction's log line and the line's
// log lines about it (discarded bytes) carry the same trace id, and two
// transactions have two.
func TestTraceFollowsARequest(t *testing.T) {
	r := startRig(t, sim.Faults{Corrupt: 1}, "") // every answer broken
	c := dial(t, r.addr)
	for i := range 2 {
		if got := exchange(t, c, uint16(i+1), 1, []byte{0x03, 0, 0, 0, 1}); string(got) != "\x83\x0b" {
			t.Fatalf("read from a device whose answers are all broken: % X", got)
		}
	}
	var txTraces []string
	dropped := map[string]int{}
	for l := range strings.SplitSeq(strings.TrimSpace(r.log.String()), "\n") {
		m := transactions(t, l)
		if len(m) == 1 {
			txTraces = append(txTraces, m[0]["trace"].(string))
			continue
		}
		if strings.Contains(l, `"msg":"discarded bytes on the line"`) {
			i := strings.Index(l, `"trace":"`)
			if i < 0 {
				t.Fatalf("a line log without its trace: %s", l)
			}
			id := l[i+len(`"trace":"`):]
			dropped[id[:strings.IndexByte(id, '"')]]++
		}
	}
	if len(txTraces) != 2 || txTraces[0] == "" || txTraces[0] == txTraces[1] {
		t.Fatalf("transaction traces %q", txTraces)
	}
	for _, id := range txTraces {
		if dropped[id] != 2 { // two attempts, each answered brokenly
			t.Errorf("trace %s: %d discarded-bytes lines, want 2 (all: %v)\n%s", id, dropped[id], dropped, r.log.String())
		}
	}
}
