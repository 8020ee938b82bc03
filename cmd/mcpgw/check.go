package main

import (
	"flag"
	"fmt"
	"io"

	"github.com/mcpgw/mcpgw/pkg/config"
	"github.com/mcpgw/mcpgw/pkg/wire/mbsec"
)

// cmdCheck validates a configuration file as run would read it, the TLS
// certificate files included, without opening a port or a listener.
func cmdCheck(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "config.toml", "configuration file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := config.Load(*path)
	if err != nil {
		return err
	}
	if t := cfg.Server.TLS; t.Listen != "" {
		if _, err := mbsec.LoadCerts(t.Cert, t.Key, t.ClientCA); err != nil {
			return fmt.Errorf("%s: %w", *path, err)
		}
	}
	units := 0
	for _, b := range cfg.Bus {
		units += len(b.UnitIDs)
	}
	fmt.Fprintf(stdout, "%s: ok: %d line(s), %d unit(s), %d access rule(s)\n", *path, len(cfg.Bus), units, len(cfg.Access))
	return nil
}
