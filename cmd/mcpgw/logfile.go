package main

import (
	"errors"
	"os"
	"sync"
)

// logFile is the log's file, which SIGHUP reopens: logrotate moves the
// file away and signals, and the next lines go to a new file at the
// configured path.
type logFile struct {
	path string
	mu   sync.Mutex
	f    *os.File
}

func openLogFile(path string) (*logFile, error) {
	l := &logFile{path: path}
	return l, l.reopen()
}

func (l *logFile) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.f.Write(p)
}

// reopen opens the path again; on failure the old file stays in use.
func (l *logFile) reopen() error {
	// The log names every client and transaction: the gateway's user and
	// group only.
	f, err := os.OpenFile(l.path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o640)
	if err != nil {
		return err
	}
	l.mu.Lock()
	old := l.f
	l.f = f
	l.mu.Unlock()
	if old != nil {
		return old.Close()
	}
	return nil
}

func (l *logFile) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return errors.New("log file not open")
	}
	return l.f.Close()
}
