// Package capture records what crosses a serial line and reads it back:
// classic pcap with the RTAC serial header (link type 250, which Wireshark
// and tshark decode as Modbus RTU with -d rtacser.data==mbrtu), a readable
// text format for testdata, and the hex dumps socat -x -v writes.
package capture

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Dir is a record's direction, seen from the master (the gateway).
type Dir uint8

const (
	TX Dir = iota + 1 // sent by the master: requests
	RX                // received by the master: answers, noise
)

func (d Dir) String() string {
	switch d {
	case TX:
		return "tx"
	case RX:
		return "rx"
	}
	return "?"
}

// Record is bytes seen on the line in one direction without a pause.
type Record struct {
	Time    time.Time // the first byte
	End     time.Time // the last byte, if known
	Dir     Dir
	Data    []byte
	Comment string
}

// Writer writes records to a capture file.
type Writer interface {
	Write(r *Record) error
	Close() error
}

// ErrFormat means a file is none of the formats this package reads.
var ErrFormat = errors.New("capture: unknown format (want .pcap/.pcapng, mcpgw .txt, or socat -x -v output)")

// Create makes a capture file, its format chosen by the extension: .pcap
// or .txt. With maxBytes > 0 it rotates: when a file passes maxBytes it is
// renamed with a timestamp and a new one started.
func Create(path string, maxBytes int64) (Writer, error) {
	var open func(w io.Writer) (Writer, error)
	switch strings.ToLower(filepath.Ext(path)) {
	case ".pcap":
		open = newPcapWriter
	case ".txt":
		open = newTextWriter
	default:
		return nil, fmt.Errorf("capture %s: the extension must be .pcap or .txt", path)
	}
	rw := &rotating{path: path, max: maxBytes, open: open}
	if err := rw.start(); err != nil {
		return nil, err
	}
	return rw, nil
}

// rotating starts a new file when the current one grows past max.
type rotating struct {
	path string
	max  int64
	open func(io.Writer) (Writer, error)
	f    *os.File
	cw   *countWriter
	w    Writer
}

type countWriter struct {
	w *bufio.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// FileMode is the mode of capture files: they hold every register value
// on the line.
const FileMode = 0o640

func (r *rotating) start() error {
	// A capture holds every value on the line: readable by the
	// gateway's user and group only, whatever the umask.
	f, err := os.OpenFile(r.path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, FileMode)
	if err == nil {
		err = f.Chmod(FileMode) // a file that was there keeps its mode otherwise
	}
	if err != nil {
		if f != nil {
			f.Close()
		}
		return fmt.Errorf("capture: %w", err)
	}
	r.f, r.cw = f, &countWriter{w: bufio.NewWriterSize(f, 64<<10)}
	w, err := r.open(r.cw)
	if err != nil {
		f.Close()
		return err
	}
	r.w = w
	return nil
}

func (r *rotating) Write(rec *Record) error {
	if err := r.w.Write(rec); err != nil {
		return err
	}
	if r.max > 0 && r.cw.n >= r.max {
		if err := r.finish(); err != nil {
			return err
		}
		ext := filepath.Ext(r.path)
		old := strings.TrimSuffix(r.path, ext) + "-" + time.Now().UTC().Format("20060102T150405.000") + ext
		if err := os.Rename(r.path, old); err != nil {
			return fmt.Errorf("capture: rotate: %w", err)
		}
		return r.start()
	}
	return nil
}

// Flush writes what is buffered to the file.
func (r *rotating) Flush() error { return r.cw.w.Flush() }

func (r *rotating) finish() error {
	return errors.Join(r.w.Close(), r.cw.w.Flush(), r.f.Close())
}

func (r *rotating) Close() error { return r.finish() }

// ReadFile reads a capture in any of the formats, told apart by content.
func ReadFile(path string) ([]Record, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("capture: %w", err)
	}
	recs, err := Read(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return recs, nil
}

// Read parses a capture in any of the formats.
func Read(data []byte) ([]Record, error) {
	if len(data) >= 4 {
		switch string(data[:4]) {
		case "\xd4\xc3\xb2\xa1", "\xa1\xb2\xc3\xd4", "\x4d\x3c\xb2\xa1", "\xa1\xb2\x3c\x4d", "\x0a\x0d\x0d\x0a":
			return readPcap(bytes.NewReader(data))
		}
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
			continue
		case strings.HasPrefix(line, ">") || strings.HasPrefix(line, "<"):
			return readSocat(data)
		default:
			return readText(data)
		}
	}
	return nil, nil
}
