//go:build !linux

// Command mcpgw-bench measures mcpgw against its floors; it needs Linux
// (pseudo-terminals paced by a precise thread, /proc for CPU time,
// SCHED_IDLE, perf counters).
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "mcpgw-bench: the bench runs on Linux only (it reads /proc and paces lines with Linux's timers)")
	os.Exit(2)
}
