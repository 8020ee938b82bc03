// Command mcpgw is a Modbus TCP to RTU gateway.
//
//	mcpgw run -config config.toml     serve Modbus TCP clients from serial lines
//	mcpgw reload -config config.toml  have the running gateway reload its configuration
//	mcpgw demo                        the gateway with simulated devices on a virtual line
//	mcpgw sim -port /dev/pts/7 ...    simulated RTU devices on a serial port
//	mcpgw poll -tcp 127.0.0.1:5020    read or write a device, through a gateway or on a line
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/lmittmann/tint"
	"github.com/mcpgw/mcpgw/pkg/gateway"
	"golang.org/x/term"
)

const usage = `mcpgw: a Modbus TCP to RTU gateway

Usage:
  mcpgw run  -config config.toml   run the gateway
  mcpgw check -config config.toml  validate a configuration (and its TLS files) without running; exit 0 or 1
  mcpgw reload -config config.toml check the file, then have the gateway running with it reload it (via metrics.listen)
  mcpgw demo [-listen addr]        the gateway with simulated devices on a virtual serial line
  mcpgw sim  -port PATH [flags]    simulated RTU devices on a serial port
  mcpgw poll [flags]               read or write registers, via TCP or straight on a line
  mcpgw replay [-format json] FILE the transactions in a capture (.pcap, .txt, socat -x -v)
  mcpgw version

Run 'mcpgw COMMAND -h' for a command's flags.
`

var version = "dev"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// errUsage marks errors that are the caller's words: exit status 2.
var errUsage = errors.New("usage")

func run(args []string, stdout, stderr io.Writer) int {
	gateway.Version = version
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "run":
		err = cmdRun(args[1:], stderr)
	case "check":
		err = cmdCheck(args[1:], stdout, stderr)
	case "reload":
		err = cmdReload(args[1:], stdout, stderr)
	case "demo":
		err = cmdDemo(args[1:], stdout, stderr)
	case "sim":
		err = cmdSim(args[1:], stderr)
	case "poll":
		err = cmdPoll(args[1:], stdout, stderr)
	case "replay":
		err = cmdReplay(args[1:], stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, "mcpgw", version)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
	default:
		fmt.Fprintf(stderr, "mcpgw: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		fmt.Fprintf(stderr, "mcpgw %s: %v\n", args[0], err)
		return 2
	default:
		fmt.Fprintf(stderr, "mcpgw %s: %v\n", args[0], err)
		return 1
	}
}

func usageErr(format string, a ...any) error {
	return fmt.Errorf("%w: %s", errUsage, fmt.Sprintf(format, a...))
}

// logLevel is the process's log level, which a reload may change.
var logLevel slog.LevelVar

// newLogger returns the logger for level ("debug", "info", "warn",
// "error") and format ("text": tint, coloured on a terminal; "json").
func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	if err := setLogLevel(level); err != nil {
		return nil, err
	}
	lv := &logLevel
	switch strings.ToLower(format) {
	case "json":
		return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: lv})), nil
	case "text", "":
		return slog.New(tint.NewHandler(w, &tint.Options{
			Level:      lv,
			TimeFormat: "2006-01-02T15:04:05.000Z07:00",
			NoColor:    !isTerminal(w),
		})), nil
	}
	return nil, usageErr("log format %q: want text or json", format)
}

// setLogLevel sets the process's log level by name.
func setLogLevel(level string) error {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return usageErr("log level %q: want debug, info, warn or error", level)
	}
	logLevel.Set(lv)
	return nil
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	return term.IsTerminal(int(f.Fd()))
}
