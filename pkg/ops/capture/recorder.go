package capture

import (
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// Recorder writes records from a serial line's goroutine without making it
// wait for the disk: Record copies the bytes and hands them to a writer
// goroutine through a bounded queue; if the disk falls that far behind,
// records are dropped and counted rather than slowing the line.
type Recorder struct {
	w       Writer
	log     *slog.Logger
	queue   chan *Record
	pool    sync.Pool
	done    chan struct{}
	dropped atomic.Uint64
}

// NewRecorder starts a recorder writing to w.
func NewRecorder(w Writer, log *slog.Logger) *Recorder {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &Recorder{w: w, log: log, queue: make(chan *Record, 4096), done: make(chan struct{})}
	r.pool.New = func() any { return &Record{Data: make([]byte, 0, 256)} }
	go r.run()
	return r
}

// Record queues one record: dir, the time of its first and last byte, and
// the bytes (copied). Safe on a nil Recorder, which records nothing.
func (r *Recorder) Record(dir Dir, start, end time.Time, p []byte) {
	if r == nil || len(p) == 0 {
		return
	}
	rec := r.pool.Get().(*Record)
	rec.Dir, rec.Time, rec.End, rec.Comment = dir, start, end, ""
	rec.Data = append(rec.Data[:0], p...)
	select {
	case r.queue <- rec:
	default:
		r.dropped.Add(1)
		r.pool.Put(rec)
	}
}

// Sent records bytes the master sent (TX), and Received bytes it
// received (RX): what a line's Recorder (rtu.Recorder) asks for.
func (r *Recorder) Sent(start, end time.Time, p []byte)     { r.Record(TX, start, end, p) }
func (r *Recorder) Received(start, end time.Time, p []byte) { r.Record(RX, start, end, p) }

// Dropped returns how many records were dropped because the queue was full.
func (r *Recorder) Dropped() uint64 { return r.dropped.Load() }

func (r *Recorder) run() {
	defer close(r.done)
	flush := time.NewTicker(time.Second)
	defer flush.Stop()
	failed := false
	for {
		select {
		case rec, ok := <-r.queue:
			if !ok {
				return
			}
			if err := r.w.Write(rec); err != nil && !failed {
				failed = true
				r.log.Error("capture: write failed; further records are lost", "err", err)
			}
			r.pool.Put(rec)
		case <-flush.C:
			if f, ok := r.w.(interface{ Flush() error }); ok {
				f.Flush()
			}
		}
	}
}

// Close writes what is queued and closes the file.
func (r *Recorder) Close() error {
	if r == nil {
		return nil
	}
	close(r.queue)
	<-r.done
	if n := r.dropped.Load(); n > 0 {
		r.log.Warn("capture: records dropped because the disk fell behind", "dropped", n)
	}
	return r.w.Close()
}
