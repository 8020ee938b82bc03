package config

import (
	"fmt"
	"os"
	"slices"

	"github.com/prometheus/exporter-toolkit/web"
	"go.yaml.in/yaml/v2"
	"golang.org/x/crypto/bcrypt"
)

// checkWebConfig checks a Prometheus web configuration file: readable,
// valid YAML of the format, its certificate files there and its
// password hashes bcrypt.
func checkWebConfig(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	// exporter-toolkit's own check says only that a hash is bad, not
	// whose: name the user, and how to make one.
	var c struct {
		Users map[string]string `yaml:"basic_auth_users"`
	}
	if yaml.Unmarshal(b, &c) == nil {
		names := make([]string, 0, len(c.Users))
		for name := range c.Users {
			names = append(names, name)
		}
		slices.Sort(names)
		for _, name := range names {
			if _, err := bcrypt.Cost([]byte(c.Users[name])); err != nil {
				return fmt.Errorf("%s: basic_auth_users: %s: the password is not a bcrypt hash (%v); make one with: htpasswd -nBC 10 %s", path, name, err, name)
			}
		}
	}
	if err := web.Validate(path); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}
