//go:build linux

// Command mcpgw-bench measures a gateway, the mcpgw binary, side by side
// with a direct RTU master on identical virtual lines, and writes
// BENCHMARKS.md; it also soaks one under faulty simulated devices. It is
// test tooling, not shipped: make bench and make soak run it.
//
//	mcpgw-bench [-gateway bin/mcpgw] [-out BENCHMARKS.md] [-scale 1] [-only SECTION]
//	mcpgw-bench soak [-gateway bin/mcpgw] [-duration 3m]
//
// simline, tcpecho and spin are its own helpers, which it runs as
// processes of its own binary.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/mcpgw/mcpgw/internal/bench"
	"github.com/mcpgw/mcpgw/pkg/config"
	"github.com/mcpgw/mcpgw/pkg/tools/sim"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	cmd, rest := "bench", args
	if len(args) > 0 && (args[0] == "soak" || args[0] == "simline" || args[0] == "tcpecho" || args[0] == "spin") {
		cmd, rest = args[0], args[1:]
	}
	var err error
	switch cmd {
	case "bench":
		err = cmdBench(rest, stdout, stderr)
	case "soak":
		err = cmdSoak(rest, stdout, stderr)
	case "simline":
		err = cmdSimline(rest, stdout, stderr)
	case "tcpecho":
		err = bench.TCPEcho(stdout)
	case "spin":
		err = bench.Spin()
	}
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	default:
		fmt.Fprintf(stderr, "mcpgw-bench %s: %v\n", cmd, err)
		return 1
	}
}

// cmdBench measures the gateway against a direct RTU master, side by
// side, and writes the report to BENCHMARKS.md.
func cmdBench(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("mcpgw-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o bench.Options
	fs.StringVar(&o.Gateway, "gateway", "bin/mcpgw", "the mcpgw binary to measure")
	fs.StringVar(&o.Out, "out", "BENCHMARKS.md", "file to write the report to (empty: none)")
	fs.Float64Var(&o.Scale, "scale", 1, "multiply request counts and durations (0.2 for a quick look)")
	fs.IntVar(&o.Many, "many", 1000, "clients in the many-clients run")
	fs.StringVar(&o.Only, "only", "", "run one section alone and print it: faster, sparkplug, uplink, status, wires, pace or absent")
	fs.StringVar(&o.Probe, "probe", "testdata/interop/latency_probe.c", "libmodbus latency probe to build with cc (empty: skip)")
	fs.StringVar(&o.Floor, "floor", "testdata/interop/floor_relay.c", "the floor relay to build with cc, the CPU per transaction's yardstick (empty: skip)")
	fs.StringVar(&o.Slave, "slave", "testdata/interop/rtu_slave.c", "the libmodbus RTU slave to build with cc, the device of the absent-devices rows (empty: skip)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	return bench.Run(context.Background(), o, stdout, stderr)
}

// cmdSoak runs many checking clients against faulty simulated devices.
func cmdSoak(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("soak", flag.ContinueOnError)
	fs.SetOutput(stderr)
	gw := fs.String("gateway", "bin/mcpgw", "the mcpgw binary to soak")
	dur := fs.Duration("duration", 3*time.Minute, "how long to run")
	clients := fs.Int("clients", 50, "concurrent clients")
	units := fs.String("units", "1-5", "simulated unit ids")
	faults := sim.FaultFlags(fs, sim.Faults{Drop: 0.03, Corrupt: 0.03, Late: 0.01, LateBy: 150 * time.Millisecond, Noise: 0.03})
	if err := fs.Parse(args); err != nil {
		return err
	}
	ids, err := config.ParseUnits([]string{*units})
	if err != nil {
		return fmt.Errorf("-units: %w", err)
	}
	return bench.Soak(context.Background(), bench.SoakOptions{Gateway: *gw, Duration: *dur, Clients: *clients, Units: ids, Faults: *faults}, stdout, stderr)
}

// cmdSimline is the bench's helper: a virtual line with simulated
// devices, served until interrupted (bench.Simline).
func cmdSimline(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("simline", flag.ContinueOnError)
	fs.SetOutput(stderr)
	baud := fs.Int("baud", 19200, "nominal bit rate, 11-bit characters")
	paced := fs.Bool("paced", false, "deliver bytes at the baud rate's pace")
	units := fs.String("units", "1", "unit ids")
	faults := sim.FaultFlags(fs, sim.Faults{})
	clock := fs.Bool("clock", false, "the devices' first 100 holding registers hold their clock")
	ascii := fs.Bool("ascii", false, "the devices speak Modbus ASCII")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ids, err := config.ParseUnits([]string{*units})
	if err != nil {
		return fmt.Errorf("-units: %w", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	report := make(chan os.Signal, 1) // the bench asks for the devices' counters
	signal.Notify(report, syscall.SIGUSR1)
	defer signal.Stop(report)
	return bench.Simline(ctx, bench.SimlineOptions{Baud: *baud, Paced: *paced, Units: ids, Faults: *faults, Clock: *clock, ASCII: *ascii, Report: report}, stdout)
}
