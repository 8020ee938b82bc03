package config

import (
	"fmt"
	"os"

	"github.com/prometheus/exporter-toolkit/web"
)

// checkWebConfig checks a Prometheus web configuration file: readable,
// valid YAML of the format, its certificate files there and its
// password hashes bcrypt.
func checkWebConfig(path string) error {
	if _, err := os.ReadFile(path); err != nil {
		return err
	}
	if err := web.Validate(path); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}
