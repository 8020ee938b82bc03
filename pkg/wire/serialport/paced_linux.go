package serialport

import (
	"time"

	"golang.org/x/sys/unix"
)

// preciseThread gives the calling (locked) thread a timer slack of 1 ns,
// so that its sleeps end within microseconds.
func preciseThread() { unix.Prctl(unix.PR_SET_TIMERSLACK, 1, 0, 0, 0) }

// sleepThread sleeps the thread itself (nanosleep), not the goroutine.
func sleepThread(d time.Duration) {
	ts := unix.NsecToTimespec(d.Nanoseconds())
	unix.Nanosleep(&ts, nil)
}
