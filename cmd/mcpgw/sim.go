package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os/signal"
	"strings"
	"syscall"

	"github.com/mcpgw/mcpgw/pkg/config"
	"github.com/mcpgw/mcpgw/pkg/ops/capture"
	"github.com/mcpgw/mcpgw/pkg/tools/replay"
	"github.com/mcpgw/mcpgw/pkg/tools/sim"
	"github.com/mcpgw/mcpgw/pkg/wire/serialport"
)

// serialFlags registers the flags of a serial line's settings.
func serialFlags(fs *flag.FlagSet) func() (serialport.Settings, error) {
	baud := fs.Int("baud", 19200, "bit rate")
	parity := fs.String("parity", "E", "parity: N, E or O")
	dataBits := fs.Int("data-bits", 8, "data bits")
	stopBits := fs.Int("stop-bits", 1, "stop bits: 1 or 2")
	return func() (serialport.Settings, error) {
		p := strings.ToUpper(*parity)
		if len(p) != 1 {
			return serialport.Settings{}, usageErr("-parity %q: want N, E or O", *parity)
		}
		s := serialport.Settings{Baud: *baud, DataBits: *dataBits, Parity: p[0], StopBits: *stopBits}
		if err := s.Validate(); err != nil {
			return s, usageErr("%v", err)
		}
		return s, nil
	}
}

// unitsFlag parses a -units flag: unit ids and ranges, such as 1-3,7.
func unitsFlag(s string) ([]byte, error) {
	ids, err := config.ParseUnits([]string{s})
	if err != nil {
		return nil, usageErr("-units: %v", err)
	}
	return ids, nil
}

func cmdSim(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("sim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	port := fs.String("port", "", "serial port to serve, such as /dev/ttyUSB1 or /dev/pts/7 (required)")
	units := fs.String("units", "1", "unit ids to simulate: numbers and ranges, such as 1-3,7")
	size := fs.Int("size", 10000, "coils, discrete inputs, holding and input registers per unit")
	level := fs.String("log-level", "info", "debug, info, warn or error")
	replayFile := fs.String("replay", "", "answer from this capture (.pcap, .txt, socat -x -v) instead of register models")
	settings := serialFlags(fs)
	faults := sim.FaultFlags(fs, sim.Faults{})
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *port == "" {
		return usageErr("-port is required: the serial device the simulated units answer on")
	}
	ids, err := unitsFlag(*units)
	if err != nil {
		return err
	}
	if *size < 1 || *size > 65536 {
		return usageErr("-size %d: want 1..65536", *size)
	}
	s, err := settings()
	if err != nil {
		return err
	}
	log, err := newLogger(stderr, *level, "text")
	if err != nil {
		return err
	}
	p, err := serialport.Open(*port, s)
	if err != nil {
		return err
	}
	defer p.Close()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	line := &sim.Line{Port: p, Units: sim.NewUnits(ids, *size), Faults: *faults, Log: log}
	if *replayFile != "" {
		recs, err := capture.ReadFile(*replayFile)
		if err != nil {
			return err
		}
		txs, _ := replay.Analyze(recs)
		line.Replay = replay.Answers(txs)
		log.Info("answering from a capture", "file", *replayFile, "transactions", len(txs), "distinct_requests", len(line.Replay))
	}
	log.Info("simulating devices", "port", *port, "units", *units, "baud", s.Baud, "parity", string(rune(s.Parity)))
	err = line.Serve(ctx)
	log.Info("simulator stopped", "stats", fmt.Sprintf("%+v", line.Stats()))
	return err
}
