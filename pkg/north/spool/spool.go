// Package spool is a message log on disk: records appended in order,
// read back in order, and dropped once acknowledged. It keeps what an
// uplink could not yet deliver across a restart, a kill -9 and a power
// cut.
//
// The log is a directory of segment files, each named for the id of its
// first record (00000000000000000042.seg), holding records one after
// another:
//
//	[4 bytes length, big-endian][4 bytes CRC-32C of the data][data]
//
// Every record is written with one write(2), so a process killed at any
// moment leaves whole records behind it (the kernel has them); the
// files are synced every SyncEvery, so a power cut loses at most that
// much. A torn or corrupt tail (a power cut mid-write) is cut off when
// the log is opened. The file "ack" holds the id of the first record not
// yet acknowledged, rewritten in place on each Ack; a lost ack (power
// cut) means records sent again, never records lost.
//
// Past Max bytes the oldest segment goes, read or not, and its unread
// records are counted as dropped.
package spool

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// SyncEvery is how often appended records and the ack are synced to the
// disk.
const SyncEvery = time.Second

// MaxRecord is the largest record the log takes.
const MaxRecord = 16 << 20

const (
	headerLen = 8
	ackFile   = "ack"
	lockName  = "lock"
	segSuffix = ".seg"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Log is a message log in a directory. Its methods may be called from
// several goroutines.
type Log struct {
	dir     string
	max     int64 // bytes, all segments together
	segSize int64 // a segment is closed past this

	mu       sync.Mutex
	segs     []*segment // oldest first; the last is written to
	size     int64      // of all segments
	next     uint64     // the next record's id
	read     uint64     // the first record not yet acknowledged
	rseg     int        // the segment holding read, while read < next
	roff     int64      // read's offset in it
	ack      *os.File
	lock     *os.File // held (flock) while open
	dropped  uint64
	dirty    bool
	syncer   *time.Timer
	closed   bool
	truncErr error // what was cut off the tail on Open, if anything
}

type segment struct {
	first uint64 // id of its first record
	count uint64
	size  int64
	f     *os.File
}

// Open opens (creating if need be) the log in dir, which must exist,
// keeping at most max bytes. A corrupt tail is cut off; Truncated says
// what was.
func Open(dir string, maxBytes int64) (*Log, error) {
	l := &Log{dir: dir, max: maxBytes, segSize: min(4<<20, maxBytes/4+1)}
	lock, err := os.OpenFile(filepath.Join(dir, lockName), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	if err := lockFile(lock); err != nil {
		lock.Close()
		return nil, fmt.Errorf("spool: %s is in use by another process (two gateways cannot share a store): %w", dir, err)
	}
	l.lock = lock
	ents, err := os.ReadDir(dir)
	if err != nil {
		l.closeFiles()
		return nil, fmt.Errorf("spool: %w", err)
	}
	type file struct {
		first uint64
		name  string
	}
	var files []file
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), segSuffix)
		if !ok {
			continue
		}
		first, err := strconv.ParseUint(name, 10, 64)
		if err != nil {
			continue
		}
		files = append(files, file{first, filepath.Join(dir, e.Name())})
	}
	slices.SortFunc(files, func(a, b file) int { return cmp.Compare(a.first, b.first) })
	for _, fl := range files {
		s, err := l.scan(fl.first, fl.name)
		if err != nil {
			l.closeFiles()
			return nil, err
		}
		l.segs = append(l.segs, s)
		l.size += s.size
		l.next = s.first + s.count
	}
	if l.ack, err = os.OpenFile(filepath.Join(dir, ackFile), os.O_RDWR|os.O_CREATE, 0o600); err != nil {
		l.closeFiles()
		return nil, fmt.Errorf("spool: %w", err)
	}
	l.read = l.readAck()
	if len(l.segs) > 0 {
		l.read = max(l.read, l.segs[0].first)
	} else {
		l.read = max(l.read, l.next)
	}
	l.read = min(l.read, l.next)
	if len(l.segs) == 0 {
		if err := l.newSegment(l.next); err != nil {
			l.closeFiles()
			return nil, err
		}
	}
	if err := l.seekRead(); err != nil {
		l.closeFiles()
		return nil, err
	}
	l.gc()
	return l, nil
}

// Truncated reports what Open cut off the log's tail, nil if nothing.
func (l *Log) Truncated() error { return l.truncErr }

// scan reads a segment's records, checking each: a bad record and
// everything after it in the file is cut off (the tail a crash left),
// and said.
func (l *Log) scan(first uint64, name string) (*segment, error) {
	f, err := os.OpenFile(name, os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	s := &segment{first: first, f: f}
	var hdr [headerLen]byte
	var buf []byte
	for {
		got, err := f.ReadAt(hdr[:], s.size)
		if got == 0 && err == io.EOF {
			break
		}
		bad := ""
		n := int64(binary.BigEndian.Uint32(hdr[:4]))
		switch {
		case err != nil:
			bad = "a torn record header"
		case n > MaxRecord:
			bad = fmt.Sprintf("a record length of %d", n)
		default:
			buf = slices.Grow(buf[:0], int(n))[:n]
			if _, err := f.ReadAt(buf, s.size+headerLen); err != nil {
				bad = "a torn record"
			} else if crc32.Checksum(buf, castagnoli) != binary.BigEndian.Uint32(hdr[4:]) {
				bad = "a record whose checksum does not match"
			}
		}
		if bad != "" {
			end, _ := f.Seek(0, io.SeekEnd)
			l.truncErr = fmt.Errorf("spool: %s: %s at byte %d of %d: cut off there (%d records kept)", name, bad, s.size, end, s.count)
			if err := f.Truncate(s.size); err != nil {
				f.Close()
				return nil, fmt.Errorf("spool: %w", err)
			}
			break
		}
		s.size += headerLen + n
		s.count++
	}
	if _, err := f.Seek(s.size, io.SeekStart); err != nil {
		f.Close()
		return nil, fmt.Errorf("spool: %w", err)
	}
	return s, nil
}

func (l *Log) readAck() uint64 {
	var b [12]byte
	if _, err := l.ack.ReadAt(b[:], 0); err != nil {
		return 0
	}
	if crc32.Checksum(b[:8], castagnoli) != binary.BigEndian.Uint32(b[8:]) {
		return 0 // torn: everything is sent again rather than lost
	}
	return binary.BigEndian.Uint64(b[:8])
}

func (l *Log) writeAck() error {
	var b [12]byte
	binary.BigEndian.PutUint64(b[:8], l.read)
	binary.BigEndian.PutUint32(b[8:], crc32.Checksum(b[:8], castagnoli))
	_, err := l.ack.WriteAt(b[:], 0)
	return err
}

func (l *Log) newSegment(first uint64) error {
	name := filepath.Join(l.dir, fmt.Sprintf("%020d%s", first, segSuffix))
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	l.segs = append(l.segs, &segment{first: first, f: f})
	return syncDir(l.dir)
}

// seekRead finds the segment and offset of record l.read.
func (l *Log) seekRead() error {
	for i, s := range l.segs {
		if l.read >= s.first+s.count && i < len(l.segs)-1 {
			continue
		}
		l.rseg, l.roff = i, 0
		var hdr [headerLen]byte
		for id := s.first; id < l.read; id++ {
			if _, err := s.f.ReadAt(hdr[:], l.roff); err != nil {
				return fmt.Errorf("spool: %w", err)
			}
			l.roff += headerLen + int64(binary.BigEndian.Uint32(hdr[:4]))
		}
		return nil
	}
	return nil
}

// Append adds a record at the end of the log.
func (l *Log) Append(rec []byte) error {
	if len(rec) > MaxRecord {
		return fmt.Errorf("spool: a record of %d bytes, more than %d", len(rec), MaxRecord)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return errors.New("spool: closed")
	}
	s := l.segs[len(l.segs)-1]
	if s.size > 0 && s.size+headerLen+int64(len(rec)) > l.segSize {
		if err := s.f.Sync(); err != nil {
			return fmt.Errorf("spool: %w", err)
		}
		if err := l.newSegment(l.next); err != nil {
			return err
		}
		s = l.segs[len(l.segs)-1]
	}
	buf := make([]byte, headerLen+len(rec))
	binary.BigEndian.PutUint32(buf, uint32(len(rec)))
	binary.BigEndian.PutUint32(buf[4:], crc32.Checksum(rec, castagnoli))
	copy(buf[headerLen:], rec)
	if _, err := s.f.WriteAt(buf, s.size); err != nil { // one write: whole or not at all for kill -9
		return fmt.Errorf("spool: %w", err)
	}
	s.size += int64(len(buf))
	s.count++
	l.size += int64(len(buf))
	l.next++
	l.markDirty()
	l.gc()
	return nil
}

// markDirty arranges a sync within SyncEvery (mu held).
func (l *Log) markDirty() {
	if l.dirty {
		return
	}
	l.dirty = true
	l.syncer = time.AfterFunc(SyncEvery, func() { l.Sync() })
}

// Sync writes what was appended and acknowledged to the disk. It does
// not hold the log while the disk works: appends and reads go on.
func (l *Log) Sync() error {
	l.mu.Lock()
	if l.closed || !l.dirty {
		l.mu.Unlock()
		return nil
	}
	l.dirty = false
	seg, ack := l.segs[len(l.segs)-1].f, l.ack
	l.mu.Unlock()
	err := errors.Join(seg.Sync(), ack.Sync())
	if errors.Is(err, os.ErrClosed) {
		return nil // the segment went (read, or the log closed) meanwhile
	}
	return err
}

// gc removes the segments wholly acknowledged, and the oldest ones past
// max, read or not (mu held).
func (l *Log) gc() {
	for len(l.segs) > 1 {
		s := l.segs[0]
		end := s.first + s.count
		switch {
		case l.read >= end: // wholly acknowledged
			if l.rseg > 0 {
				l.rseg--
			} else {
				l.roff = 0 // it was at the end of s: the start of the next
			}
		case l.size > l.max:
			unread := end - l.read
			l.dropped += unread
			l.read = end
			l.rseg, l.roff = 0, 0
			l.writeAck()
		default:
			return
		}
		s.f.Close()
		os.Remove(s.f.Name())
		l.size -= s.size
		l.segs = l.segs[1:]
	}
}

// Peek returns the oldest record not yet acknowledged and its id.
func (l *Log) Peek() (id uint64, rec []byte, ok bool, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed || l.read >= l.next {
		return 0, nil, false, nil
	}
	s := l.segs[l.rseg]
	if l.roff >= s.size { // the reader is at the end of an old segment
		l.rseg++
		l.roff = 0
		s = l.segs[l.rseg]
	}
	var hdr [headerLen]byte
	if _, err := s.f.ReadAt(hdr[:], l.roff); err != nil {
		return 0, nil, false, fmt.Errorf("spool: record %d: %w", l.read, err)
	}
	rec = make([]byte, binary.BigEndian.Uint32(hdr[:4]))
	if _, err := s.f.ReadAt(rec, l.roff+headerLen); err != nil {
		return 0, nil, false, fmt.Errorf("spool: record %d: %w", l.read, err)
	}
	return l.read, rec, true, nil
}

// Each calls fn with every record not yet acknowledged, oldest first,
// until fn returns false.
func (l *Log) Each(fn func(id uint64, rec []byte) bool) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	id, seg, off := l.read, l.rseg, l.roff
	var hdr [headerLen]byte
	for id < l.next && !l.closed {
		s := l.segs[seg]
		if off >= s.size {
			seg, off = seg+1, 0
			continue
		}
		if _, err := s.f.ReadAt(hdr[:], off); err != nil {
			return fmt.Errorf("spool: record %d: %w", id, err)
		}
		rec := make([]byte, binary.BigEndian.Uint32(hdr[:4]))
		if _, err := s.f.ReadAt(rec, off+headerLen); err != nil {
			return fmt.Errorf("spool: record %d: %w", id, err)
		}
		if !fn(id, rec) {
			return nil
		}
		id, off = id+1, off+headerLen+int64(len(rec))
	}
	return nil
}

// Ack acknowledges the record Peek returned as id: the next Peek returns
// the one after it. An id that is no longer the oldest (dropped
// meanwhile) is ignored.
func (l *Log) Ack(id uint64) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed || id != l.read || l.read >= l.next {
		return nil
	}
	s := l.segs[l.rseg]
	var hdr [headerLen]byte
	if _, err := s.f.ReadAt(hdr[:], l.roff); err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	l.roff += headerLen + int64(binary.BigEndian.Uint32(hdr[:4]))
	l.read++
	if l.roff >= s.size && l.rseg < len(l.segs)-1 {
		l.rseg++
		l.roff = 0
	}
	err := l.writeAck()
	l.markDirty()
	l.gc()
	return err
}

// Next is the id the next Append gets.
func (l *Log) Next() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.next
}

// Len is the number of records not yet acknowledged.
func (l *Log) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return int(l.next - l.read)
}

// Size is the bytes the log takes on disk.
func (l *Log) Size() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.size
}

// Dropped is the number of unread records dropped, the log full.
func (l *Log) Dropped() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.dropped
}

// Close syncs and closes the log.
func (l *Log) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	if l.syncer != nil {
		l.syncer.Stop()
	}
	err := l.segs[len(l.segs)-1].f.Sync()
	err = errors.Join(err, l.ack.Sync())
	l.closed = true
	l.closeFiles()
	return err
}

func (l *Log) closeFiles() {
	for _, s := range l.segs {
		s.f.Close()
	}
	if l.ack != nil {
		l.ack.Close()
	}
	if l.lock != nil {
		l.lock.Close() // and the flock with it
	}
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	return nil
}
