package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// TestReplayGolden replays every capture in testdata/captures and compares
// the output with its .golden file (refresh with -update).
func TestReplayGolden(t *testing.T) {
	files, _ := filepath.Glob("../../testdata/captures/*")
	n := 0
	for _, path := range files {
		base := filepath.Base(path)
		if strings.HasSuffix(base, ".golden") || strings.HasSuffix(base, ".sh") || base == "README.md" {
			continue
		}
		n++
		t.Run(base, func(t *testing.T) {
			var out, errb bytes.Buffer
			if code := run([]string{"replay", path}, &out, &errb); code != 0 {
				t.Fatalf("exit %d: %s", code, errb.String())
			}
			golden := path + ".golden"
			if *update {
				if err := os.WriteFile(golden, out.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (make it with -update)", err)
			}
			if !bytes.Equal(out.Bytes(), want) {
				t.Errorf("replay %s differs from %s:\n%s", base, filepath.Base(golden), out.String())
			}
		})
	}
	if n < 4 {
		t.Fatalf("only %d captures in testdata/captures", n)
	}
}

func TestReplayJSON(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"replay", "-format", "json", "../../testdata/captures/session.socat.txt"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	fcs := map[float64]bool{}
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("not JSON: %q", line)
		}
		if m["msg"] == "transaction" {
			fcs[m["fc"].(float64)] = true
			if _, ok := m["unit"]; !ok {
				t.Errorf("no unit: %v", m)
			}
		}
	}
	for _, fc := range []float64{1, 2, 3, 4, 5, 6, 15, 16, 17, 22, 23, 43} {
		if !fcs[fc] {
			t.Errorf("function code %v missing from the session's replay", fc)
		}
	}
}
