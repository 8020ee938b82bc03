package loadtest

import (
	"encoding/binary"
	"testing"
	"time"

	"github.com/mcpgw/mcpgw/pkg/registers"
)

func answer(unit byte, addr, qty int) []byte {
	p := []byte{0x03, byte(2 * qty)}
	for i := range qty {
		p = binary.BigEndian.AppendUint16(p, registers.PatternHolding(unit, addr+i))
	}
	return p
}

func TestTally(t *testing.T) {
	cr := newClientResult()
	if !cr.tally(2, 10, 3, answer(2, 10, 3), time.Millisecond) {
		t.Fatal("the right answer counted as wrong")
	}
	// Another unit's values, another address's, a short answer, an exception.
	if cr.tally(2, 10, 3, answer(3, 10, 3), time.Millisecond) ||
		cr.tally(2, 10, 3, answer(2, 11, 3), time.Millisecond) ||
		cr.tally(2, 10, 3, answer(2, 10, 2), time.Millisecond) ||
		cr.tally(2, 10, 3, []byte{0x83, 0x0B}, time.Millisecond) {
		t.Fatal("a wrong answer or an exception counted as right")
	}
	res := merge([]clientResult{cr}, time.Second)
	if res.OK != 1 || res.Wrong != 3 || res.Exceptions[0x0B] != 1 || res.Transactions != 5 || res.FirstWrong == "" {
		t.Fatalf("%+v", res)
	}
	if least, most := res.Fairness(); least != 1 || most != 1 {
		t.Fatalf("fairness %d/%d", least, most)
	}
}
