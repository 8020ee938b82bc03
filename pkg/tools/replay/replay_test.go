package replay

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mcpgw/mcpgw/pkg/ops/capture"
	"github.com/mcpgw/mcpgw/pkg/rtu"
)

func TestAnalyzeSplitsAndPairs(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	req := rtu.AppendADU(nil, 1, []byte{0x03, 0x00, 0x00, 0x00, 0x02})
	resp := rtu.AppendADU(nil, 1, []byte{0x03, 0x04, 0x00, 0x07, 0x00, 0x08})
	bad := append([]byte(nil), resp...)
	bad[4] ^= 0xFF
	recs := []capture.Record{
		{Time: t0, Dir: capture.TX, Data: req},
		// an answer in two pieces, as a paced line delivers it
		{Time: t0.Add(time.Millisecond), Dir: capture.RX, Data: resp[:3]},
		{Time: t0.Add(1500 * time.Microsecond), Dir: capture.RX, Data: resp[3:]},
		{Time: t0.Add(10 * time.Millisecond), Dir: capture.TX, Data: req},
		{Time: t0.Add(11 * time.Millisecond), Dir: capture.RX, Data: append([]byte{0xAA}, bad...)},
		{Time: t0.Add(20 * time.Millisecond), Dir: capture.TX, Data: rtu.AppendADU(nil, 0, []byte{0x06, 0, 1, 0, 2})},
	}
	txs, sum := Analyze(recs)
	if len(txs) != 3 || txs[0].Outcome != "ok" || txs[0].Values != "7 8" || txs[0].Latency != time.Millisecond {
		t.Fatalf("%+v", txs)
	}
	if txs[1].Outcome != "crc error" || txs[2].Outcome != "broadcast" {
		t.Fatalf("outcomes %q %q", txs[1].Outcome, txs[2].Outcome)
	}
	if sum.CRCErrors != 1 || sum.NoiseBytes != 1+len(bad) || sum.OK != 1 || sum.Unanswered != 1 || sum.Broadcasts != 1 {
		t.Fatalf("summary %+v", sum)
	}
	// Recorded the other way round (a socat dump with the device first): swapped.
	for i := range recs {
		recs[i].Dir = 3 - recs[i].Dir
	}
	if txs2, sum2 := Analyze(recs); !sum2.Swapped || len(txs2) != 3 || txs2[0].Values != "7 8" {
		t.Fatalf("swapped: %+v %+v", sum2, txs2)
	}
	ans := Answers(txs)
	if got := ans[string(append([]byte{1}, req[1:len(req)-2]...))]; len(got) != 2 || string(got[0]) != string(resp) || got[1] != nil {
		t.Fatalf("answers %x", got)
	}
}

func FuzzAnalyze(f *testing.F) {
	files, _ := filepath.Glob("../../../testdata/captures/*")
	for _, p := range files {
		if b, err := os.ReadFile(p); err == nil && !strings.HasSuffix(p, ".sh") && !strings.HasSuffix(p, ".golden") {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		recs, err := capture.Read(b)
		if err != nil {
			return
		}
		txs, sum := Analyze(recs)
		if sum.Transactions != len(txs) || sum.OK+sum.Exceptions+sum.Unanswered+sum.Broadcasts != len(txs) {
			t.Fatalf("summary %+v does not add up to %d transactions", sum, len(txs))
		}
	})
}
