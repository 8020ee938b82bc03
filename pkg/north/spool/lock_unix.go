//go:build unix

package spool

import (
	"os"
	"syscall"
)

// lockFile takes f's exclusive lock, or fails at once if another process
// holds it; closing f lets it go.
func lockFile(f *os.File) error {
	return syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
}
