package trace

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

func TestIDs(t *testing.T) {
	a, b := Next(), Next()
	if a == 0 || b != a+1 || a.String() == b.String() || len(a.String()) > 13 {
		t.Fatalf("ids %v %v", a, b)
	}
	if ID(0).String() != "" || ID(36).String() != "10" {
		t.Fatalf("formatting: %q %q", ID(0), ID(36))
	}
	var buf bytes.Buffer
	slog.New(slog.NewTextHandler(&buf, nil)).Info("x", "trace", ID(35))
	if !strings.Contains(buf.String(), "trace=z") {
		t.Fatalf("log: %s", buf.String())
	}
}
