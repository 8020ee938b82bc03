package bench

import (
	"os"
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
	for end := time.Now().Add(20 * time.Millisecond); time.Now().Before(end); {
	}
	cpu1, runs1 := schedOf(pid)
	if runs1-runs0 < 20 {
		t.Errorf("20 sleeps: %d more context switches, want at least 20", runs1-runs0)
	}
	if cpu1-cpu0 < 10*time.Millisecond {
		t.Errorf("20 ms spinning: %v more CPU, want at least 10 ms", cpu1-cpu0)
	}
}
