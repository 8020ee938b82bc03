//go:build windows

package spool

import (
	"os"

	"golang.org/x/sys/windows"
)

// lockFile takes f's exclusive lock, or fails at once if another process
// holds it; closing f lets it go.
func lockFile(f *os.File) error {
	return windows.LockFileEx(windows.Handle(f.Fd()), windows.LOCKFILE_EXCLUSIVE_LOCK|windows.LOCKFILE_FAIL_IMMEDIATELY, 0, 1, 0, new(windows.Overlapped))
}
