package main

import (
	"context"
	"flag"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/mcpgw/mcpgw/internal/bench"
	"github.com/mcpgw/mcpgw/pkg/tools/sim"
)

// cmdBench measures the gateway against a direct RTU master, side by side
// (pkg/bench), and writes the report to BENCHMARKS.md.
func cmdBench(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o bench.Options
	fs.StringVar(&o.Out, "out", "BENCHMARKS.md", "file to write the table to (empty: none)")
	fs.Float64Var(&o.Scale, "scale", 1, "multiply request counts and durations (0.2 for a quick look)")
	fs.IntVar(&o.Many, "many", 1000, "clients in the many-clients run")
	fs.StringVar(&o.Only, "only", "", "run one section alone and print it: faster, sparkplug, wires, pace or absent")
	fs.StringVar(&o.Probe, "probe", "testdata/interop/latency_probe.c", "libmodbus latency probe to build with cc (empty: skip)")
	fs.StringVar(&o.Floor, "floor", "testdata/interop/floor_relay.c", "the floor relay to build with cc, the CPU per transaction's yardstick (empty: skip)")
	fs.StringVar(&o.Slave, "slave", "testdata/interop/rtu_slave.c", "the libmodbus RTU slave to build with cc, the device of the absent-devices rows (empty: skip)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	return bench.Run(context.Background(), o, stdout, stderr)
}

// cmdSoak runs many checking clients against faulty simulated devices
// (pkg/bench).
func cmdSoak(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("soak", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dur := fs.Duration("duration", 3*time.Minute, "how long to run")
	clients := fs.Int("clients", 50, "concurrent clients")
	units := fs.String("units", "1-5", "simulated unit ids")
	faults := faultFlags(fs, sim.Faults{Drop: 0.03, Corrupt: 0.03, Late: 0.01, LateBy: 150 * time.Millisecond, Noise: 0.03})
	if err := fs.Parse(args); err != nil {
		return err
	}
	ids, err := unitsFlag(*units)
	if err != nil {
		return err
	}
	return bench.Soak(context.Background(), bench.SoakOptions{Duration: *dur, Clients: *clients, Units: ids, Faults: *faults}, stdout, stderr)
}

// cmdSimline is the bench's helper: a virtual line with simulated
// devices, served until interrupted (bench.Simline).
func cmdSimline(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("simline", flag.ContinueOnError)
	fs.SetOutput(stderr)
	baud := fs.Int("baud", 19200, "nominal bit rate, 11-bit characters")
	paced := fs.Bool("paced", false, "deliver bytes at the baud rate's pace")
	units := fs.String("units", "1", "unit ids")
	faults := faultFlags(fs, sim.Faults{})
	clock := fs.Bool("clock", false, "the devices' first 100 holding registers hold their clock")
	ascii := fs.Bool("ascii", false, "the devices speak Modbus ASCII")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ids, err := unitsFlag(*units)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	report := make(chan os.Signal, 1) // the bench asks for the devices' counters
	signal.Notify(report, syscall.SIGUSR1)
	defer signal.Stop(report)
	return bench.Simline(ctx, bench.SimlineOptions{Baud: *baud, Paced: *paced, Units: ids, Faults: *faults, Clock: *clock, ASCII: *ascii, Report: report}, stdout)
}
