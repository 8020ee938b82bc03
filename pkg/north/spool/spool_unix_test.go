//go:build unix

package spool

import (
	"os"
	"os/exec"
	"syscall"
	"testing"
)

// TestKilled: a process appending records and acknowledging some is
// killed (SIGKILL, no chance to close or sync): every record it appended
// is there, and none it acknowledged.
func TestKilled(t *testing.T) {
	if dir := os.Getenv("SPOOL_KILL_DIR"); dir != "" {
		l, err := Open(dir, 1<<20)
		if err != nil {
			os.Exit(3)
		}
		for i := range 5000 {
			l.Append(rec(i))
		}
		for range 1234 {
			id, _, _, _ := l.Peek()
			l.Ack(id)
		}
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {}
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestKilled$")
	cmd.Env = append(os.Environ(), "SPOOL_KILL_DIR="+dir)
	err := cmd.Run()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("the child was not killed: %v", err)
	}
	l := open(t, dir, 1<<20)
	defer l.Close()
	drain(t, l, 1234, 5000-1234)
}
