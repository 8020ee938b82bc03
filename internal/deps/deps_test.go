package deps

import (
	"encoding/json"
	"io"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/mcpgw/mcpgw"

type pkg struct {
	ImportPath string
	Imports    []string
}

// list runs go list -json on patterns (with -deps, every package they
// link), for the host's platform.
func list(t *testing.T, deps bool, patterns ...string) map[string]pkg {
	t.Helper()
	args := []string{"list", "-json"}
	if deps {
		args = append(args, "-deps")
	}
	cmd := exec.Command("go", append(args, patterns...)...)
	cmd.Dir = "../.."
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Skipf("go list: %v", err)
	}
	pkgs := make(map[string]pkg)
	dec := json.NewDecoder(out)
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		pkgs[p.ImportPath] = p
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("go list %s: %v", strings.Join(patterns, " "), err)
	}
	return pkgs
}

// standard reports whether path is in the standard library: its first
// element has no dot.
func standard(path string) bool {
	first, _, _ := strings.Cut(path, "/")
	return !strings.Contains(first, ".")
}

func local(path string) string { return strings.TrimPrefix(path, module+"/") }

// TestCodecs: the codecs and the request they fill import only the
// standard library and each other (and x/sys for the TCP server's socket
// options): no logging framework, no config, no other part of the
// gateway.
func TestCodecs(t *testing.T) {
	allowed := []string{"pkg/crc", "pkg/pdu", "pkg/trace", "pkg/request", "pkg/registers", "pkg/rtu", "pkg/tag", "pkg/quirk"}
	codecs := append(slices.Clone(allowed), "pkg/tcp", "pkg/wire/ascii")
	for _, c := range codecs {
		for path, p := range list(t, false, "./"+c) {
			for _, imp := range p.Imports {
				if standard(imp) || slices.Contains(allowed, local(imp)) || imp == "golang.org/x/sys/unix" && c == "pkg/tcp" {
					continue
				}
				t.Errorf("%s imports %s: a codec imports the standard library and the request package only", local(path), imp)
			}
		}
	}
}

// TestLineLinks: the serial line does not link the capture library (it
// declares the Recorder it needs).
func TestLineLinks(t *testing.T) {
	for _, p := range list(t, true, "./pkg/rtu") {
		if strings.Contains(p.ImportPath, "gopacket") || local(p.ImportPath) == "pkg/ops/capture" {
			t.Errorf("pkg/rtu links %s", p.ImportPath)
		}
	}
}

// TestConfigAtTheEdge: only the commands and the wiring (pkg/gateway)
// import pkg/config; each other package declares its own settings, and
// config imports none of them.
func TestConfigAtTheEdge(t *testing.T) {
	for path, p := range list(t, false, "./...") {
		l := local(path)
		if slices.Contains(p.Imports, module+"/pkg/config") && !strings.HasPrefix(l, "cmd/") && l != "pkg/gateway" {
			t.Errorf("%s imports pkg/config: translate the config in pkg/gateway and hand it settings of its own", l)
		}
		if l == "pkg/config" {
			for _, imp := range p.Imports {
				if strings.HasPrefix(imp, module+"/") {
					t.Errorf("pkg/config imports %s: config reads the file; the gateway translates it", local(imp))
				}
			}
		}
	}
}

// TestShippedBinary: the installed binary does not carry the bench, the
// load generator or the spec's test frames.
func TestShippedBinary(t *testing.T) {
	for path := range list(t, true, "./cmd/mcpgw") {
		if strings.HasPrefix(path, module+"/internal/") {
			t.Errorf("cmd/mcpgw links %s: test tooling belongs in cmd/mcpgw-bench or in tests", local(path))
		}
	}
}
