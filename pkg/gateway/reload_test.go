package gateway_test

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/goburrow/modbus"

	"github.com/mcpgw/mcpgw/pkg/config"
	"github.com/mcpgw/mcpgw/pkg/tools/sim"
)

// TestReloadKeepsClients: new access rules and rate limit take effect on
// a connection that stays open; a line whose settings did not change
// keeps running as it is.
func TestReloadKeepsClients(t *testing.T) {
	r := startRig(t, sim.Faults{}, "[[access]]\nallow = \"read\"\n")
	c := dial(t, r.addr)
	write := []byte{0x06, 0, 5, 0, 9}
	if got := exchange(t, c, 1, 1, write); string(got) != "\x86\x01" {
		t.Fatalf("write under read-only rules: % X", got)
	}
	bus := r.svc.Lines()[0]
	cfg, err := config.Parse(strings.Replace(lineConfig(r.path, "retries = 1\nbroadcast_delay = \"5ms\"\n[[access]]\nallow = \"read-write\"\n"),
		"[server]\n", "[server]\nrate_limit = 2\n", 1))
	if err != nil {
		t.Fatal(err)
	}
	applied, restart, err := r.svc.Reload(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(applied, "access") || len(restart) != 0 || r.svc.Lines()[0] != bus {
		t.Fatalf("applied %v, need a restart %v; same line %v", applied, restart, r.svc.Lines()[0] == bus)
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
}

// TestReloadLines: while independent clients (goburrow/modbus) poll two
// units, a reload adds a line, adds a unit to a line and changes its
// timeout (the line reopens), and removes another line. No poll sees an
// error; the added line and unit answer, the removed line's unit gets
// 0x0A.
func TestReloadLines(t *testing.T) {
	lineOf := func(units ...byte) string { return onPty(t, &sim.Line{Units: sim.NewUnits(units, 1000)}) }
	l1, l2, l3 := lineOf(1, 2, 3), lineOf(20), lineOf(30)
	text := func(l1Extra, lines string) string {
		return fmt.Sprintf(`
[server]
listen = "127.0.0.1:0"
[[bus]]
name = "l1"
port = %q
parity = "N"
timeout = "200ms"
%s
%s`, l1, l1Extra, lines)
	}
	logs := &syncBuffer{}
	before := text(`units = [1, 2]`, fmt.Sprintf("[[bus]]\nname = \"l3\"\nport = %q\nparity = \"N\"\nunits = [30]\n", l3))
	svc, addr := startService(t, before, slog.New(slog.NewJSONHandler(logs, nil)))
	for !svc.Lines()[1].Up() {
		time.Sleep(time.Millisecond)
	}
	if _, err := client(t, addr, 3).ReadHoldingRegisters(0, 1); err == nil {
		t.Fatal("unit 3 answered before it was configured")
	}
	if _, err := client(t, addr, 30).ReadHoldingRegisters(0, 1); err != nil {
		t.Fatalf("unit 30 before the reload: %v", err)
	}

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var polls [2]int
	for i, unit := range []byte{1, 2} {
		c := client(t, addr, unit)
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := c.ReadHoldingRegisters(uint16(i), 4); err != nil {
					t.Errorf("unit %d, poll %d: %v", unit, polls[i], err)
					return
				}
				polls[i]++
			}
		})
	}
	time.Sleep(100 * time.Millisecond)
	after := strings.Replace(text("units = [1, 2, 3]", fmt.Sprintf("[[bus]]\nname = \"l2\"\nport = %q\nparity = \"N\"\nunits = [20]\n", l2)), `timeout = "200ms"`, `timeout = "300ms"`, 1)
	cfg, err := config.Parse(after)
	if err != nil {
		t.Fatal(err)
	}
	applied, restart, err := svc.Reload(cfg)
	if err != nil || len(restart) != 0 {
		t.Fatalf("reload: %v, need a restart %v", err, restart)
	}
	for _, want := range []string{`bus "l1": reopened`, `bus "l2": added`, `bus "l3": removed`} {
		if !slices.Contains(applied, want) {
			t.Errorf("applied %q, want %s among them", applied, want)
		}
	}
	time.Sleep(200 * time.Millisecond)
	close(stop)
	wg.Wait()
	if polls[0] < 5 || polls[1] < 5 {
		t.Fatalf("polls %v: too few to have crossed the reload", polls)
	}
	for _, unit := range []byte{3, 20} {
		if _, err := client(t, addr, unit).ReadHoldingRegisters(0, 1); err != nil {
			t.Fatalf("unit %d after the reload: %v", unit, err)
		}
	}
	_, err = client(t, addr, 30).ReadHoldingRegisters(0, 1)
	var me *modbus.ModbusError
	if !errors.As(err, &me) || me.ExceptionCode != 0x0A {
		t.Fatalf("unit 30 on the removed line: %v, want exception 0A", err)
	}
	if n := len(svc.Lines()); n != 2 || svc.Lines()[0].Name() != "l1" || svc.Lines()[1].Name() != "l2" {
		t.Fatalf("%d lines running", n)
	}
	if log := logs.String(); !strings.Contains(log, "serial line closed for a reload") {
		t.Fatalf("no line closed for the reload:\n%s", log)
	}
}
