package gateway_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/mcpgw/mcpgw/pkg/config"
	"github.com/mcpgw/mcpgw/pkg/sim"
)

// TestReloadKeepsClients: new access rules and rate limit take effect on
// a connection that stays open; a changed line is reported as needing a
// restart and left as it runs.
func TestReloadKeepsClients(t *testing.T) {
	r := startRig(t, sim.Faults{}, "[[access]]\nallow = \"read\"\n")
	c := dial(t, r.addr)
	write := []byte{0x06, 0, 5, 0, 9}
	if got := exchange(t, c, 1, 1, write); string(got) != "\x86\x01" {
		t.Fatalf("write under read-only rules: % X", got)
	}
	cfg, err := config.Parse(`
[server]
listen = "127.0.0.1:0"
rate_limit = 2
[[bus]]
name = "l1"
port = "/dev/changed"
units = ["1-9"]
[[access]]
allow = "read-write"
`)
	if err != nil {
		t.Fatal(err)
	}
	applied, restart, err := r.svc.Reload(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(applied, "access") || !slices.Equal(restart, []string{"bus"}) {
		t.Fatalf("applied %v, need a restart %v", applied, restart)
	}
	// The same connection: the write goes through now, and the new rate
	// limit answers the third request in a burst with 06.
	if got := exchange(t, c, 2, 1, write); string(got) != string(write) {
		t.Fatalf("write after the reload: % X", got)
	}
	exchange(t, c, 3, 1, []byte{0x03, 0, 5, 0, 1})
	if got := exchange(t, c, 4, 1, []byte{0x03, 0, 5, 0, 1}); string(got) != "\x83\x06" {
		t.Fatalf("a third request at rate_limit 2: % X", got)
	}
	// The line runs on its old port.
	if !r.svc.Lines[0].Up() || strings.Contains(r.log.String(), "/dev/changed") {
		t.Fatal("the line was touched by the reload")
	}
}
