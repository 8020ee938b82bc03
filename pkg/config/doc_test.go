package config

import (
	"os"
	"reflect"
	"strings"
	"testing"
)

// keys returns every key of the file, dotted ("bus.poll.value.name"),
// from the toml tags of t.
func keys(prefix string, t reflect.Type) []string {
	var out []string
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
		if name == "" || name == "-" {
			continue
		}
		key := prefix + name
		ft := f.Type
		for ft.Kind() == reflect.Pointer || ft.Kind() == reflect.Slice {
			ft = ft.Elem()
		}
		if ft.Kind() == reflect.Struct && ft != reflect.TypeFor[Duration]() {
			out = append(out, keys(key+".", ft)...)
			continue
		}
		out = append(out, key)
	}
	return out
}

// TestEveryKeyDocumented: the configuration reference has a row for
// every key the file can hold, written `section.key`, and no row for a
// key that does not exist.
func TestEveryKeyDocumented(t *testing.T) {
	doc, err := os.ReadFile("../../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	all := keys("", reflect.TypeFor[Config]())
	if len(all) < 80 {
		t.Fatalf("only %d keys found: %v", len(all), all)
	}
	known := make(map[string]bool)
	for _, k := range all {
		known[k] = true
		if !strings.Contains(string(doc), "| `"+k+"` |") {
			t.Errorf("docs/configuration.md has no row for `%s`", k)
		}
	}
	for _, line := range strings.Split(string(doc), "\n") {
		if k, ok := strings.CutPrefix(line, "| `"); ok {
			k, _, _ = strings.Cut(k, "`")
			if !known[k] {
				t.Errorf("docs/configuration.md documents `%s`, which is no key", k)
			}
		}
	}
}
