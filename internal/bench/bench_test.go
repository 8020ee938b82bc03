//go:build linux

package bench

import (
	"os"
	"syscall"
	"testing"
	"time"
)

// TestSchedOf: a process's CPU time and context switches grow with what
// its threads do, the switches with each sleep.
func TestSchedOf(t *testing.T) {
	pid := os.Getpid()
	cpu0, runs0 := schedOf(pid)
	if cpu0 <= 0 || runs0 <= 0 {
		t.Fatalf("schedOf(self) = %v, %d: want both above zero", cpu0, runs0)
	}
	for range 20 {
		time.Sleep(time.Millisecond)
	}
	// Spin for 20 ms of this process's CPU time, as getrusage counts it
	// (on a busy machine 20 ms of the clock can be less).
	used := func() time.Duration {
		var ru syscall.Rusage
		syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	for end := used() + 20*time.Millisecond; used() < end; {
	}
	cpu1, runs1 := schedOf(pid)
	if runs1-runs0 < 20 {
		t.Errorf("20 sleeps: %d more context switches, want at least 20", runs1-runs0)
	}
	if cpu1-cpu0 < 10*time.Millisecond {
		t.Errorf("20 ms of CPU spinning: %v more in schedstat, want at least 10 ms", cpu1-cpu0)
	}
}
