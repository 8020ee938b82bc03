package loadtest

import (
	"encoding/binary"
	"math/rand/v2"
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
	if !cr.tally(2, 10, 3, answer(2, 10, 3), time.Millisecond, nil) {
		t.Fatal("the right answer counted as wrong")
	}
	// Another unit's values, another address's, a short answer, an exception.
	if cr.tally(2, 10, 3, answer(3, 10, 3), time.Millisecond, nil) ||
		cr.tally(2, 10, 3, answer(2, 11, 3), time.Millisecond, nil) ||
		cr.tally(2, 10, 3, answer(2, 10, 2), time.Millisecond, nil) ||
		cr.tally(2, 10, 3, []byte{0x83, 0x0B}, time.Millisecond, nil) {
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

func TestAdd(t *testing.T) {
	a := newClientResult()
	a.tally(2, 10, 3, answer(2, 10, 3), time.Millisecond, nil)
	a.tally(2, 10, 3, []byte{0x83, 0x0B}, time.Millisecond, nil)
	b := newClientResult()
	b.tally(2, 10, 3, answer(3, 10, 3), 2*time.Millisecond, nil)
	b.errs["timeout"]++
	var sum Result
	sum.Add(merge([]clientResult{a}, time.Second))
	sum.Add(merge([]clientResult{b}, 2*time.Second))
	if sum.Transactions != 3 || sum.OK != 1 || sum.Wrong != 1 || sum.Exceptions[0x0B] != 1 ||
		sum.Errors["timeout"] != 1 || sum.Elapsed != 3*time.Second || len(sum.Latencies) != 1 ||
		len(sum.ExcLatencies) != 1 || len(sum.PerClient) != 2 || sum.FirstWrong == "" {
		t.Fatalf("%+v", sum)
	}
}

// TestDistinct: with Distinct, no two clients ever pick the same starting
// address; without it, they share the whole range.
func TestDistinct(t *testing.T) {
	cfg := Config{Clients: 7, Units: []byte{1}, Qty: 10, MinAddr: 100, MaxAddr: 200, Distinct: true}
	owner := map[int]int{}
	for k := range cfg.Clients {
		c := cfg.forClient(k)
		rnd := rand.New(rand.NewPCG(1, uint64(k)))
		for range 200 {
			_, addr := c.pick(rnd)
			if addr < 100 || addr+10 > 200 {
				t.Fatalf("client %d read %d..%d, outside 100..199", k, addr, addr+9)
			}
			if o, ok := owner[addr]; ok && o != k {
				t.Fatalf("clients %d and %d both start at %d", o, k, addr)
			}
			owner[addr] = k
		}
	}
	if len(owner) < 7*13 {
		t.Fatalf("%d starting addresses used: the windows are too narrow", len(owner))
	}
	cfg.Distinct = false
	if c := cfg.forClient(3); c.MinAddr != 100 || c.MaxAddr != 200 {
		t.Fatalf("without Distinct: %d..%d", c.MinAddr, c.MaxAddr)
	}
}
