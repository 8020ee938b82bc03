package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/goburrow/modbus"

	"github.com/mcpgw/mcpgw/pkg/config"
	"github.com/mcpgw/mcpgw/pkg/gateway"
	"github.com/mcpgw/mcpgw/pkg/tools/sim"
)

// cmdDemo runs the gateway against simulated devices on a virtual serial
// line it makes itself: no hardware, nothing to install.
func cmdDemo(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:5020", "Modbus TCP address to listen on")
	metricsAt := fs.String("metrics", "127.0.0.1:9502", "address of the status page and /metrics; \"\": none")
	units := fs.String("units", "1-3", "simulated unit ids")
	level := fs.String("log-level", "info", "debug, info, warn or error")
	format := fs.String("log-format", "text", "text or json")
	faults := sim.FaultFlags(fs, sim.Faults{})
	broker := fs.String("mqtt", "", "also publish each unit's first 4 holding registers, polled every second, to this MQTT broker as a Sparkplug B edge node (group demo, node mcpgw-demo), such as tcp://127.0.0.1:1883")
	flaky := fs.Int("flaky", 2, "a simulated unit that drops 1 answer in 5, as a flaky meter does (0: none)")
	absent := fs.Int("absent", 4, "a unit configured on the line with no device behind it (0: none)")
	scada := fs.Bool("scada", true, "a built-in client reads each unit's first 4 registers every second, as a SCADA would, so that the status page has something to show")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ids, err := unitsFlag(*units)
	if err != nil {
		return err
	}
	if *absent < 0 || *absent > 247 || slices.Contains(ids, byte(*absent)) {
		return fmt.Errorf("-absent %d: want a unit id 1..247 that is not simulated (-units %s), or 0", *absent, *units)
	}
	configured := *units
	if *absent > 0 {
		configured += fmt.Sprintf(",%d", *absent)
	}
	log, err := newLogger(stderr, *level, *format)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	line, dev, err := sim.OnPty(ctx, ids, *faults, log)
	if err != nil {
		return err
	}
	defer line.Close()
	if *flaky > 0 {
		f := *faults
		f.Drop = max(f.Drop, 1.0/5)
		dev.SetUnitFaults(byte(*flaky), &f)
	}

	// The gateway's side goes through the same configuration as mcpgw run.
	cfg, err := config.Parse(fmt.Sprintf(`
[server]
listen = %q
[metrics]
listen = %q
[log]
level = %q
format = %q
[[bus]]
name = "demo"
port = %q
baud = 19200
parity = "N"
stop_bits = 2
timeout = "200ms"
units = [%q]
%s`, *listen, *metricsAt, *level, *format, line.Path, configured, demoSparkplug(*broker, ids)))
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, `mcpgw demo: simulated units %s on virtual serial line %s
Modbus TCP on %s. Try:
  mbpoll -m tcp -p %s -a 1 -0 -r 0 -c 10 -1 %s
  go run ./cmd/mcpgw poll -tcp %s -unit 1 -r 0 -c 10
Holding register N of unit U holds U*1000+N.%s
%sCtrl-C stops.
`, *units, line.Path, *listen, port(*listen), host(*listen), *listen, demoNotes(*flaky, *absent, *scada), statusAt(*metricsAt))
	svc, err := gateway.NewService(cfg, log)
	if err != nil {
		return err
	}
	if *scada {
		all := ids
		if *absent > 0 {
			all = append(slices.Clone(ids), byte(*absent))
		}
		go demoSCADA(ctx, *listen, all)
	}
	return serve(svc, 2*time.Second, log, nil, nil)
}

// demoNotes says what the demo's units do, for its banner.
func demoNotes(flaky, absent int, scada bool) string {
	var b strings.Builder
	if flaky > 0 {
		fmt.Fprintf(&b, "\nUnit %d drops 1 answer in 5, as a flaky meter does.", flaky)
	}
	if absent > 0 {
		fmt.Fprintf(&b, "\nUnit %d is configured, but no device answers: it goes offline.", absent)
	}
	if scada {
		b.WriteString("\nA built-in client reads every unit each second, as a SCADA would (-scada=false: none).")
	}
	return b.String()
}

// demoSCADA reads each unit's first 4 registers every second through
// the gateway, as a SCADA does, until ctx ends.
func demoSCADA(ctx context.Context, addr string, units []byte) {
	h := modbus.NewTCPClientHandler(addr)
	h.Timeout = 2 * time.Second
	defer h.Close()
	c := modbus.NewClient(h)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		for _, u := range units {
			h.SlaveId = u
			if _, err := c.ReadHoldingRegisters(0, 4); err != nil {
				var me *modbus.ModbusError
				if !errors.As(err, &me) {
					h.Close() // a broken connection: the next read opens another
				}
			}
		}
	}
}

// statusAt is where the demo's status page is, for its banner.
func statusAt(addr string) string {
	if addr == "" {
		return ""
	}
	return "The status page: http://" + addr + "/\n"
}

// demoSparkplug is the demo's [mqtt] table and polls: each unit's first
// four holding registers as uint16 values r0..r3, the first writable.
func demoSparkplug(broker string, ids []byte) string {
	if broker == "" {
		return ""
	}
	var b strings.Builder
	for _, u := range ids {
		fmt.Fprintf(&b, "[[bus.poll]]\nunit = %d\nfunction = 3\naddress = 0\ncount = 4\ninterval = \"1s\"\ndevice = \"unit%d\"\n", u, u)
		for r := range 4 {
			fmt.Fprintf(&b, "[[bus.poll.value]]\nname = \"r%d\"\noffset = %d\ntype = \"uint16\"\nwritable = %v\n", r, r, r == 0)
		}
	}
	return fmt.Sprintf("[mqtt]\nbroker = %q\ngroup = \"demo\"\nnode = \"mcpgw-demo\"\n", broker) + b.String()
}

func port(addr string) string { _, p, _ := strings.Cut(addr, ":"); return p }
func host(addr string) string { h, _, _ := strings.Cut(addr, ":"); return h }
