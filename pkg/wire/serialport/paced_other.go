//go:build !linux

package serialport

import "time"

// preciseThread does nothing where the timer slack is not the thread's
// to set; the pace is then as fine as the runtime's timers.
func preciseThread() {}

// sleepThread sleeps for d.
func sleepThread(d time.Duration) { time.Sleep(d) }
