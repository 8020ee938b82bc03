package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/mcpgw/mcpgw/pkg/config"
	"github.com/mcpgw/mcpgw/pkg/gateway"
	"github.com/mcpgw/mcpgw/pkg/ops/notify"
)

func cmdRun(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "config.toml", "configuration file")
	grace := fs.Duration("grace", 5*time.Second, "on SIGTERM/SIGINT, how long transactions in flight may take to finish")
	captureDir := fs.String("capture", "", "record every line to DIR/<line name>.pcap (lines with their own capture key keep it)")
	captureFormat := fs.String("capture-format", "pcap", "format for -capture: pcap or txt")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile of the whole run to this file (for finding where time goes)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *captureFormat != "pcap" && *captureFormat != "txt" {
		return usageErr("-capture-format %q: want pcap or txt", *captureFormat)
	}
	if *captureDir != "" {
		if err := os.MkdirAll(*captureDir, 0o755); err != nil {
			return fmt.Errorf("-capture: %w", err)
		}
	}
	if abs, err := filepath.Abs(*path); err == nil {
		*path = abs // what mcpgw reload is told the gateway read
	}
	src := &source{path: *path, captureDir: *captureDir, captureFormat: *captureFormat}
	cfg, err := src.load()
	if err != nil {
		return err
	}
	out := stderr
	var file *logFile
	if cfg.Log.File != "" {
		if file, err = openLogFile(cfg.Log.File); err != nil {
			return fmt.Errorf("log.file: %w", err)
		}
		defer file.Close()
		out = file
	}
	log, err := newLogger(out, cfg.Log.Level, cfg.Log.Format)
	if err != nil {
		return err
	}
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			return fmt.Errorf("-cpuprofile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("-cpuprofile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	oneProcessor()
	svc, err := gateway.NewService(cfg, log)
	if err != nil {
		return err
	}
	return serve(svc, *grace, log, src, file)
}

// oneProcessor runs the gateway's Go code on one processor, unless the
// environment's GOMAXPROCS says otherwise. The gateway mostly waits: a
// transaction is a few microseconds of work between waits on the line
// and the clients, and each is a hand-over between goroutines (a
// client's to the line's and back). With a second processor idle, each
// hand-over also wakes a thread to look for work that the first one
// then does itself: on a slow line that doubled the gateway's context
// switches per transaction, and a thread's wakeup costs more CPU than
// the work (docs/operations.md, "CPU and processors").
func oneProcessor() {
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(1)
	}
}

// source is the configuration as a run reads it, at start and on each
// reload: the file, with -capture's files for the lines that name none.
type source struct {
	path                      string
	captureDir, captureFormat string
}

func (s *source) load() (*config.Config, error) {
	cfg, err := config.Load(s.path)
	if err != nil || s.captureDir == "" {
		return cfg, err
	}
	for i := range cfg.Bus {
		if cfg.Bus[i].Capture == "" {
			cfg.Bus[i].Capture = filepath.Join(s.captureDir, cfg.Bus[i].Name+"."+s.captureFormat)
		}
	}
	return cfg, nil
}

// serve starts svc and runs it until SIGTERM or SIGINT, then shuts it
// down within grace. SIGHUP reopens the log file (logrotate) and reloads
// the configuration from src (see reload), as does mcpgw reload through
// the metrics listener; with no src, SIGHUP reads only the TLS
// certificate files again.
func serve(svc *gateway.Service, grace time.Duration, log *slog.Logger, src *source, file *logFile) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	if src != nil {
		svc.OnReload = func() gateway.ReloadResult { return reload(svc, log, src, "reload") }
	}
	if _, err := svc.Start(); err != nil {
		return err
	}
	// systemd (Type=notify): ready once listening, and the watchdog fed
	// while the process serves.
	if _, err := notify.Notify("READY=1"); err != nil {
		log.Warn("systemd notify failed", "err", err)
	}
	if every := notify.WatchdogInterval(); every > 0 {
		tick := time.NewTicker(every)
		defer tick.Stop()
		go func() {
			for range tick.C {
				notify.Notify("WATCHDOG=1")
			}
		}()
	}
	defer notify.Notify("STOPPING=1")
	var serveErr error
wait:
	for {
		select {
		case <-ctx.Done():
			break wait
		case serveErr = <-svc.Done():
			break wait
		case <-hup:
			if file != nil {
				if err := file.reopen(); err != nil {
					log.Error("SIGHUP: log file not reopened, the old one stays in use", "file", file.path, "err", err)
				}
			}
			if src == nil {
				if err := svc.ReloadCerts(); err != nil {
					log.Error("SIGHUP: certificates not reloaded, the old ones stay in use", "err", err)
				}
				continue
			}
			reload(svc, log, src, "SIGHUP")
		}
	}
	sctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	if err := svc.Shutdown(sctx); err != nil {
		return err
	}
	return serveErr
}

// reload re-reads the configuration from src (on SIGHUP, or for mcpgw
// reload: via names which, for the log) and applies what can change
// while every client stays connected (gateway.Service.Reload, and the log
// level). An invalid file is refused, naming the key, and the running
// configuration stays.
func reload(svc *gateway.Service, log *slog.Logger, src *source, via string) gateway.ReloadResult {
	res := gateway.ReloadResult{Config: src.path}
	cfg, err := src.load()
	if err == nil {
		res.Applied, res.NeedRestart, err = svc.Reload(cfg)
	}
	if err != nil {
		res.Error = err.Error()
		log.Error(via+": configuration refused, the running one stays", "err", err)
		return res
	}
	setLogLevel(cfg.Log.Level)
	res.Applied = append(res.Applied, "log.level")
	log.Info(via+": configuration reloaded", "applied", res.Applied)
	if len(res.NeedRestart) > 0 {
		log.Warn(via+": changed in the file, applied at the next restart", "keys", res.NeedRestart)
	}
	return res
}
