package notify

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// TestNotify: states reach a socket listening as systemd's does; without
// $NOTIFY_SOCKET nothing is sent and nothing fails.
func TestNotify(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	if sent, err := Notify("READY=1"); sent || err != nil {
		t.Fatalf("no socket: %v, %v", sent, err)
	}
	path := filepath.Join(t.TempDir(), "notify")
	l, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	t.Setenv("NOTIFY_SOCKET", path)
	for _, state := range []string{"READY=1", "WATCHDOG=1", "STOPPING=1"} {
		if sent, err := Notify(state); !sent || err != nil {
			t.Fatalf("%s: %v, %v", state, sent, err)
		}
		buf := make([]byte, 64)
		l.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, err := l.Read(buf)
		if err != nil || string(buf[:n]) != state {
			t.Fatalf("got %q, %v; want %q", buf[:n], err, state)
		}
	}
}

func TestWatchdogInterval(t *testing.T) {
	t.Setenv("WATCHDOG_USEC", "")
	if d := WatchdogInterval(); d != 0 {
		t.Fatalf("no watchdog: %v", d)
	}
	t.Setenv("WATCHDOG_USEC", "30000000")
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
	if d := WatchdogInterval(); d != 15*time.Second {
		t.Fatalf("30 s watchdog: ping every %v", d)
	}
	t.Setenv("WATCHDOG_PID", "1")
	if d := WatchdogInterval(); d != 0 {
		t.Fatalf("another process's watchdog: %v", d)
	}
}
