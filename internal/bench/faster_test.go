//go:build linux

package bench

import (
	"testing"
	"time"
)

func TestClockValues(t *testing.T) {
	now := time.UnixMilli(1_700_000_123_456)
	for _, tc := range []struct {
		a   int
		ago time.Duration
	}{{0, 0}, {7, 15 * time.Millisecond}, {33, time.Second}, {99, 4095 * time.Millisecond}} {
		v := clockValue(tc.a, now.Add(-tc.ago))
		age, ok := clockAge(tc.a, v, now)
		if !ok || age != tc.ago {
			t.Errorf("register %d stamped %v ago: age %v, ok %v", tc.a, tc.ago, age, ok)
		}
		if _, ok := clockAge(tc.a+1, v, now); ok {
			t.Errorf("register %d's value taken for register %d's", tc.a, tc.a+1)
		}
	}
}
