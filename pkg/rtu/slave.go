package rtu

import (
	"context"
	"errors"
	"time"
)

// ReadRequests is a slave's side of a line: it reads request frames from
// p until ctx ends or a read fails, and calls frame with each whole one
// (valid until frame returns) and when its last byte came. A frame of
// unpredictable length ends at gap of silence. Bytes that make no request
// go to bad with the reason, a byte at a time as the codec resynchronises.
// It returns the read's error, or nil when ctx ended, or what frame
// returned.
func ReadRequests(ctx context.Context, p Port, gap time.Duration, frame func(f []byte, end time.Time) error, bad func(dropped []byte, err error)) error {
	var (
		buf    = make([]byte, 0, 2*MaxADU)
		rx     = make([]byte, MaxADU)
		last   time.Time // the last byte's arrival
		silent bool
	)
	for ctx.Err() == nil {
		wait := 100 * time.Millisecond
		if len(buf) > 0 {
			wait = gap
		}
		p.SetReadTimeout(wait)
		n, err := p.Read(rx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if silent = n == 0; !silent {
			last = time.Now()
		}
		buf = append(buf, rx[:n]...)
		for len(buf) > 0 {
			f, used, err := Scan(buf, RequestLen, silent)
			if errors.Is(err, ErrNeedMore) {
				break
			}
			if err != nil {
				bad(buf[:used], err)
			} else if err := frame(f, last); err != nil {
				return err
			}
			buf = buf[:copy(buf, buf[used:])]
		}
	}
	return nil
}
