package gateway_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestLibmodbusUnitTestSuite runs libmodbus's own test suite through the
// gateway: unit-test-client, a Modbus TCP client, against unit-test-server
// as an RTU slave on a virtual serial line, both built from Debian's
// source package (apt-get source libmodbus: 3.1.6 on bookworm, with
// Debian's patches; .ci/run fetches it, MCPGW_LIBMODBUS_SRC says where).
//
// The suite was written for a client talking to the server directly, so
// a few of its expectations are a Modbus TCP server's rather than a
// gateway's. harnessEdits rewrites exactly those, each with its reason;
// everything else runs as written, with no pause added after the
// requests the gateway gives up on. The gateway waits 550 ms for an
// answer, once: the server pauses 500 ms before some answers (and before
// its exception to an unknown function code), and the client's own
// timeout is 500 ms, after which libmodbus sleeps that long and flushes.
func TestLibmodbusUnitTestSuite(t *testing.T) {
	need(t, "cc", "pkg-config", "tar", "patch")
	src := os.Getenv("MCPGW_LIBMODBUS_SRC")
	if src == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("MCPGW_LIBMODBUS_SRC is not set: .ci/run fetches libmodbus's source package and sets it")
		}
		t.Skip("MCPGW_LIBMODBUS_SRC is not set: a directory holding libmodbus's Debian source package (apt-get source --download-only libmodbus)")
	}
	server, client := buildLibmodbusSuite(t, src)

	gw, dev := socatLine(t)
	srv := exec.Command(server, "rtu")
	srv.Env = append(os.Environ(), "UT_DEVICE="+dev)
	var srvOut bytes.Buffer
	srv.Stdout, srv.Stderr = &srvOut, &srvOut
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Process.Kill(); srv.Wait() })
	time.Sleep(200 * time.Millisecond) // let it open the line

	_, addr := startService(t, fmt.Sprintf(`
[server]
listen = "127.0.0.1:0"
[[bus]]
name = "suite"
port = %q
baud = 115200
parity = "N"
stop_bits = 1
timeout = "550ms"
retries = 0
units = [17]
`, gw), slog.New(slog.DiscardHandler))
	_, port, _ := net.SplitHostPort(addr)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cli := exec.CommandContext(ctx, client, "tcp")
	cli.Env = append(os.Environ(), "UT_PORT="+port)
	out, err := cli.CombinedOutput()
	passed := bytes.Count(out, []byte(": OK"))
	if err != nil || !bytes.Contains(out, []byte("ALL TESTS PASS WITH SUCCESS")) {
		t.Fatalf("unit-test-client through the gateway: %v after %d checks passed\n%s\n-- unit-test-server:\n%s", err, passed, tail(out, 40), tail(srvOut.Bytes(), 20))
	}
	t.Logf("libmodbus's unit-test-client through the gateway: all tests pass (%d checks)", passed)
}

// harnessEdits are the suite's expectations of a Modbus TCP server that a
// gateway to a serial line meets otherwise. Each must apply exactly once,
// so that a different version of the suite fails here instead of
// silently testing something else.
var harnessEdits = []struct{ file, old, new, why string }{
	{"tests/unit-test-server.c", `"/dev/ttyUSB0"`, `getenv("UT_DEVICE")`,
		"the serial line is a pty the test makes"},
	{"tests/unit-test-client.c", `modbus_new_tcp("127.0.0.1", 1502)`, `modbus_new_tcp("127.0.0.1", atoi(getenv("UT_PORT")))`,
		"the gateway listens on a free port"},
	{"tests/unit-test-client.c", "    if (use_backend == RTU) {\n        modbus_set_slave(ctx, SERVER_ID);\n    }", "    modbus_set_slave(ctx, SERVER_ID);",
		"through a gateway the unit id names the serial device; a TCP server ignores it (0xFF)"},
	{"tests/unit-test-client.c", "const int slave = (use_backend == RTU) ? SERVER_ID : MODBUS_TCP_SLAVE;", "const int slave = SERVER_ID;",
		"the raw requests too"},
	{"tests/unit-test-client.c", `printf("1/3 Response from slave %d: ", INVALID_SERVER_ID);
        ASSERT_TRUE(rc == UT_REGISTERS_NB, "");`, `printf("1/3 Gateway path unavailable for slave %d: ", INVALID_SERVER_ID);
        ASSERT_TRUE(rc == -1 && errno == EMBXGPATH, "");`,
		"a TCP server answers for any unit; the gateway answers 0x0A for a unit on no line"},
	{"tests/unit-test-client.c", `printf("2/3 Reply after a query with unit id == 0: ");
        ASSERT_TRUE(rc == UT_REGISTERS_NB, "");`, `printf("2/3 No reply after a broadcast query: ");
        ASSERT_TRUE(rc == -1 && errno == ETIMEDOUT, "");`,
		"unit 0 is a broadcast on the serial line, which no device answers (what the suite expects of RTU)"},
	{"tests/unit-test-client.c", "    if (use_backend == TCP) {\n        /* The test server is only able to test byte timeouts", "    if (0) {\n        /* The test server is only able to test byte timeouts",
		"the server paces a TCP answer's bytes with send(2); behind a gateway it is an RTU slave"},
	{"tests/unit-test-client.c", `printf("* modbus_read_registers: ");
    ASSERT_TRUE(rc == -1 && errno == EMBBADDATA, "");`, `printf("* modbus_read_registers: ");
    ASSERT_TRUE(rc == -1 && errno == EMBXGTAR, "");`,
		"the server's answer has the wrong byte count: the gateway checks it against the request, drops it and answers 0x0B"},
}

// buildLibmodbusSuite unpacks libmodbus's source package from dir,
// applies Debian's patches and harnessEdits, and builds the suite's
// server and client against the installed library.
func buildLibmodbusSuite(t *testing.T, dir string) (server, client string) {
	t.Helper()
	orig, _ := filepath.Glob(filepath.Join(dir, "libmodbus_*.orig.tar.gz"))
	debian, _ := filepath.Glob(filepath.Join(dir, "libmodbus_*.debian.tar.xz"))
	if len(orig) != 1 || len(debian) != 1 {
		t.Fatalf("%s: want one libmodbus_*.orig.tar.gz and one libmodbus_*.debian.tar.xz (apt-get source --download-only libmodbus), found %v and %v", dir, orig, debian)
	}
	work := t.TempDir()
	run := func(dir, name string, args ...string) {
		t.Helper()
		cmd := exec.Command(name, args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
	}
	run(work, "tar", "-xzf", orig[0])
	tree, _ := filepath.Glob(filepath.Join(work, "libmodbus-*"))
	if len(tree) != 1 {
		t.Fatalf("%s: no libmodbus-* tree in it", orig[0])
	}
	run(tree[0], "tar", "-xJf", debian[0])
	series, err := os.ReadFile(filepath.Join(tree[0], "debian/patches/series"))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range strings.Fields(string(series)) {
		run(tree[0], "patch", "-p1", "-s", "-i", filepath.Join("debian/patches", p))
	}
	for _, e := range harnessEdits {
		path := filepath.Join(tree[0], e.file)
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if n := strings.Count(string(b), e.old); n != 1 {
			t.Fatalf("%s: the harness edit for %q found its text %d times, want once: is this libmodbus 3.1.6?", e.file, e.why, n)
		}
		if err := os.WriteFile(path, []byte(strings.Replace(string(b), e.old, e.new, 1)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tests := filepath.Join(tree[0], "tests")
	h, err := os.ReadFile(filepath.Join(tests, "unit-test.h.in"))
	if err != nil {
		t.Fatal(err)
	}
	h = bytes.ReplaceAll(h, []byte("@HAVE_INTTYPES_H@"), []byte("1"))
	h = bytes.ReplaceAll(h, []byte("@HAVE_STDINT_H@"), []byte("1"))
	if err := os.WriteFile(filepath.Join(tests, "unit-test.h"), h, 0o644); err != nil {
		t.Fatal(err)
	}
	flags, err := exec.Command("pkg-config", "--cflags", "--libs", "libmodbus").Output()
	if err != nil {
		t.Fatalf("pkg-config libmodbus: %v (apt-get install libmodbus-dev)", err)
	}
	server, client = filepath.Join(work, "unit-test-server"), filepath.Join(work, "unit-test-client")
	for bin, c := range map[string]string{server: "unit-test-server.c", client: "unit-test-client.c"} {
		run(tests, "cc", append([]string{"-o", bin, c, "-I."}, strings.Fields(string(flags))...)...)
	}
	return server, client
}

// tail returns the last n lines of b.
func tail(b []byte, n int) []byte {
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	return bytes.Join(lines[max(0, len(lines)-n):], []byte("\n"))
}
