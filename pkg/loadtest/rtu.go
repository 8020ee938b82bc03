package loadtest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/mcpgw/mcpgw/pkg/pdu"
	"github.com/mcpgw/mcpgw/pkg/rtu"
	"github.com/mcpgw/mcpgw/pkg/serialport"
)

// RunRTU makes the same load as Run from one RTU master straight on a
// serial line: the baseline a gateway is measured against. Like any master
// that keeps the spec, it leaves gap (t3.5) of silence after each answer
// before the next request; it ends each answer at its predicted length.
// Clients in cfg is ignored.
func RunRTU(ctx context.Context, port serialport.Port, cfg Config, gap time.Duration) *Result {
	if cfg.MaxAddr <= 0 {
		cfg.MaxAddr = 9000
	}
	if cfg.Qty <= 0 {
		cfg.Qty = 10
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = time.Second
	}
	if cfg.Duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cfg.Duration)
		defer cancel()
	}
	cr := newClientResult()
	rnd := rand.New(rand.NewPCG(cfg.Seed, 0))
	var (
		adu  = make([]byte, 0, 16)
		buf  = make([]byte, 0, 512)
		rx   = make([]byte, 512)
		last time.Time
	)
	start := time.Now()
	port.ResetInputBuffer()
	for i := 0; cfg.Requests == 0 || i < cfg.Requests; i++ {
		if ctx.Err() != nil {
			break
		}
		unit := cfg.Units[rnd.IntN(len(cfg.Units))]
		addr := cfg.MinAddr + rnd.IntN(cfg.MaxAddr-cfg.Qty+1-cfg.MinAddr)
		adu = rtu.AppendADU(adu[:0], unit, []byte{pdu.ReadHoldingRegisters, byte(addr >> 8), byte(addr), 0, byte(cfg.Qty)})
		// t3.5 of silence since the last answer, timed by the port as the
		// gateway times it (time.Sleep would overshoot by up to a millisecond).
		for d := gap - time.Since(last); d > 0; d = gap - time.Since(last) {
			port.SetReadTimeout(d)
			if n, _ := port.Read(rx); n > 0 {
				last = time.Now()
			}
		}
		t0 := time.Now()
		if _, err := port.Write(adu); err != nil {
			cr.errs["write: "+err.Error()]++
			break
		}
		frame, err := readAnswer(port, buf[:0], rx, unit, t0.Add(cfg.Timeout))
		last = time.Now()
		lat := last.Sub(t0)
		if err != nil {
			cr.errs[err.Error()]++
			continue
		}
		if !cr.tally(unit, addr, cfg.Qty, frame[1:len(frame)-2], lat) {
			continue
		}
		if cfg.Think > 0 {
			time.Sleep(cfg.Think)
		}
	}
	return merge([]clientResult{cr}, time.Since(start))
}

func readAnswer(port serialport.Port, buf, rx []byte, unit byte, deadline time.Time) ([]byte, error) {
	want := rtu.Expect{Unit: unit, FC: pdu.ReadHoldingRegisters}
	for {
		frame, used, err := rtu.Scan(buf, want.Len, false)
		if err == nil {
			return frame, nil
		}
		if used > 0 {
			return nil, fmt.Errorf("bad answer: %w", err)
		}
		wait := time.Until(deadline)
		if wait <= 0 {
			return nil, fmt.Errorf("no answer")
		}
		port.SetReadTimeout(wait)
		n, err := port.Read(rx)
		if err != nil {
			return nil, err
		}
		buf = append(buf, rx[:n]...)
	}
}
