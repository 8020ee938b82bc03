// Package replay turns a capture of a serial line back into Modbus
// transactions: it splits the bytes into frames, checks every CRC, pairs
// requests with answers, and decodes what each transaction read or wrote.
package replay

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/mcpgw/mcpgw/pkg/ops/capture"
	"github.com/mcpgw/mcpgw/pkg/pdu"
	"github.com/mcpgw/mcpgw/pkg/rtu"
)

// Silence is how long a pause between records must be to end a frame
// whose length cannot be predicted (t3.5 at 19200 baud).
const Silence = 2 * time.Millisecond

// Transaction is a request and what came of it.
type Transaction struct {
	Time      time.Time
	Unit, FC  byte
	Req, Resp []byte // PDUs; Resp is nil when nothing answered
	Addr, Qty int    // -1 where the function has none
	Values    string // what was read or written, decoded
	Outcome   string // ok, exception, no answer, crc error, broadcast
	Exception pdu.Exception
	Latency   time.Duration // from the request to the first byte of the answer
}

// Summary counts what a capture held.
type Summary struct {
	Transactions, OK, Exceptions, Unanswered, Broadcasts int
	CRCErrors, NoiseBytes, Unexpected                    int
	Swapped                                              bool // the capture's directions were the other way round
}

type frame struct {
	t    time.Time
	dir  capture.Dir
	adu  []byte
	bad  error // not a frame: noise, bad CRC...
	used int
}

// Analyze reads transactions from records in time order.
func Analyze(recs []capture.Record) ([]Transaction, Summary) {
	var sum Summary
	txAsReq := len(frames(recs, capture.TX, rtu.RequestLen, nil))
	rxAsReq := len(frames(recs, capture.RX, rtu.RequestLen, nil))
	if rxAsReq > txAsReq {
		// The master's side was recorded as receiving (socat's addresses
		// the other way round): swap.
		sum.Swapped = true
		recs = append([]capture.Record(nil), recs...)
		for i := range recs {
			if recs[i].Dir == capture.TX {
				recs[i].Dir = capture.RX
			} else {
				recs[i].Dir = capture.TX
			}
		}
	}
	var all []frame
	frames(recs, capture.TX, rtu.RequestLen, &all)
	frames(recs, capture.RX, rtu.ResponseLen, &all)
	sort.SliceStable(all, func(i, j int) bool { return all[i].t.Before(all[j].t) })

	var out []Transaction
	var pending *Transaction
	var pendingCRC bool
	finish := func() {
		if pending == nil {
			return
		}
		pending.Outcome = "no answer"
		if pendingCRC {
			pending.Outcome = "crc error"
		}
		sum.Unanswered++
		out = append(out, *pending)
		pending, pendingCRC = nil, false
	}
	for _, f := range all {
		if f.bad != nil {
			if f.dir == capture.RX {
				sum.NoiseBytes += f.used
				if errors.Is(f.bad, rtu.ErrBadCRC) {
					sum.CRCErrors++
					pendingCRC = pending != nil
				}
			} else {
				sum.NoiseBytes += f.used
			}
			continue
		}
		p := f.adu[1 : len(f.adu)-2]
		unit := f.adu[0]
		if f.dir == capture.TX {
			finish()
			t := Transaction{Time: f.t, Unit: unit, FC: p[0], Req: append([]byte(nil), p...), Addr: -1, Qty: -1}
			describeRequest(&t)
			if unit == pdu.Broadcast {
				t.Outcome = "broadcast"
				sum.Broadcasts++
				out = append(out, t)
				continue
			}
			pending = &t
			continue
		}
		if pending == nil || unit != pending.Unit || !pdu.Answers(pending.FC, p[0]) {
			sum.Unexpected++
			continue
		}
		pending.Resp = append([]byte(nil), p...)
		pending.Latency = f.t.Sub(pending.Time)
		if e, ok := pdu.IsException(p); ok {
			pending.Outcome, pending.Exception = "exception", e
			sum.Exceptions++
		} else {
			pending.Outcome = "ok"
			describeResponse(pending)
			sum.OK++
		}
		out = append(out, *pending)
		pending, pendingCRC = nil, false
	}
	finish()
	sum.Transactions = len(out)
	return out, sum
}

// frames splits the records of one direction into frames and discarded
// bytes, appending them to out (if not nil); it returns the good frames.
func frames(recs []capture.Record, dir capture.Dir, lenFn rtu.LenFunc, out *[]frame) []frame {
	var good []frame
	var buf []byte
	var start time.Time
	emit := func(f frame) {
		if f.bad == nil {
			good = append(good, f)
		}
		if out != nil {
			*out = append(*out, f)
		}
	}
	// scan cuts what it can from buf; silent says the line went quiet
	// after buf's last byte.
	scan := func(silent bool) {
		for len(buf) > 0 {
			fr, used, err := rtu.Scan(buf, lenFn, silent)
			if errors.Is(err, rtu.ErrNeedMore) {
				return
			}
			if err != nil {
				// Gather a run of discarded bytes into one.
				if out != nil && len(*out) > 0 {
					last := &(*out)[len(*out)-1]
					if last.bad != nil && last.dir == dir && last.t.Equal(start) {
						last.used += used
						buf = buf[used:]
						continue
					}
				}
				emit(frame{t: start, dir: dir, bad: err, used: used})
			} else {
				emit(frame{t: start, dir: dir, adu: append([]byte(nil), fr...)})
			}
			buf = buf[used:]
		}
	}
	var lastEnd time.Time
	for i, r := range recs {
		if r.Dir != dir {
			continue
		}
		// A record of the other direction in between, or a pause, ends
		// whatever this direction had pending.
		otherBetween := i > 0 && recs[i-1].Dir != dir
		if len(buf) > 0 && (otherBetween || r.Time.Sub(lastEnd) > Silence) {
			scan(true)
		}
		if len(buf) == 0 {
			start = r.Time
		}
		buf = append(buf, r.Data...)
		lastEnd = r.Time
		if !r.End.IsZero() {
			lastEnd = r.End
		}
		scan(false)
	}
	scan(true)
	return good
}

func u16(b []byte, off int) int {
	if len(b) < off+2 {
		return -1
	}
	return int(binary.BigEndian.Uint16(b[off:]))
}

func describeRequest(t *Transaction) {
	p := t.Req
	switch t.FC {
	case pdu.ReadCoils, pdu.ReadDiscreteInputs, pdu.ReadHoldingRegisters, pdu.ReadInputRegisters:
		t.Addr, t.Qty = u16(p, 1), u16(p, 3)
	case pdu.WriteSingleCoil:
		t.Addr, t.Qty = u16(p, 1), 1
		t.Values = map[bool]string{true: "1", false: "0"}[u16(p, 3) == 0xFF00]
	case pdu.WriteSingleRegister:
		t.Addr, t.Qty = u16(p, 1), 1
		t.Values = strconv.Itoa(u16(p, 3))
	case pdu.WriteMultipleCoils:
		t.Addr, t.Qty = u16(p, 1), u16(p, 3)
		if len(p) > 6 {
			t.Values = bits(p[6:], t.Qty)
		}
	case pdu.WriteMultipleRegisters:
		t.Addr, t.Qty = u16(p, 1), u16(p, 3)
		if len(p) > 6 {
			t.Values = regs(p[6:])
		}
	case pdu.MaskWriteRegister:
		t.Addr, t.Qty = u16(p, 1), 1
		t.Values = fmt.Sprintf("and=%#04x or=%#04x", u16(p, 3), u16(p, 5))
	case pdu.ReadWriteMultipleRegisters:
		t.Addr, t.Qty = u16(p, 1), u16(p, 3)
		if len(p) > 10 {
			t.Values = fmt.Sprintf("write %d at %d: %s", u16(p, 7), u16(p, 5), regs(p[10:]))
		}
	}
}

func describeResponse(t *Transaction) {
	p := t.Resp
	switch t.FC {
	case pdu.ReadCoils, pdu.ReadDiscreteInputs:
		if len(p) > 2 {
			t.Values = bits(p[2:], t.Qty)
		}
	case pdu.ReadHoldingRegisters, pdu.ReadInputRegisters:
		if len(p) > 2 {
			t.Values = regs(p[2:])
		}
	case pdu.ReadWriteMultipleRegisters:
		if len(p) > 2 {
			t.Values = "read " + regs(p[2:]) + "; " + t.Values
		}
	case pdu.WriteSingleCoil, pdu.WriteSingleRegister, pdu.WriteMultipleCoils,
		pdu.WriteMultipleRegisters, pdu.MaskWriteRegister:
		// The request said what was written.
	default:
		if len(p) > 1 {
			t.Values = fmt.Sprintf("% x", p[1:])
		}
	}
}

func regs(b []byte) string {
	var sb strings.Builder
	for i := 0; i+1 < len(b); i += 2 {
		if i > 0 {
			sb.WriteByte(' ')
		}
		sb.WriteString(strconv.Itoa(int(binary.BigEndian.Uint16(b[i:]))))
	}
	return sb.String()
}

func bits(b []byte, n int) string {
	var sb strings.Builder
	for i := 0; i < n && i/8 < len(b); i++ {
		sb.WriteByte('0' + b[i/8]>>(i%8)&1)
	}
	return sb.String()
}

// Answers maps each request ADU (unit and PDU) seen in a capture to the
// answers recorded for it, in order, nil for silence: what a replaying
// device says.
func Answers(txs []Transaction) map[string][][]byte {
	m := map[string][][]byte{}
	for _, t := range txs {
		if t.Outcome == "broadcast" {
			continue
		}
		key := string(append([]byte{t.Unit}, t.Req...))
		var ans []byte
		if t.Resp != nil {
			ans = rtu.AppendADU(nil, t.Unit, t.Resp)
		}
		m[key] = append(m[key], ans)
	}
	return m
}
