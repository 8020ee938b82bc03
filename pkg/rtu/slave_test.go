package rtu_test

import (
	"bytes"
	"context"
	"testing"
	"testing/synctest"
	"time"

	"github.com/mcpgw/mcpgw/pkg/rtu"
)

// TestReadRequests: requests written back to back, with noise between
// them, come out whole and in order; the noise goes to bad.
func TestReadRequests(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		master, devs := memLine(1)
		a := rtu.AppendADU(nil, 1, readHolding(10, 4))
		b := rtu.AppendADU(nil, 2, readHolding(20, 2))
		master.Write(append(append(append([]byte{}, a...), 0xFF, 0xFE), b...))
		ctx, cancel := context.WithCancel(context.Background())
		var frames [][]byte
		dropped := 0
		err := rtu.ReadRequests(ctx, devs[0], 1750*time.Microsecond, func(f []byte, end time.Time) error {
			frames = append(frames, append([]byte(nil), f...))
			if end.IsZero() {
				t.Error("a frame without the time its last byte came")
			}
			if len(frames) == 2 {
				cancel()
			}
			return nil
		}, func(d []byte, err error) { dropped += len(d) })
		if err != nil {
			t.Fatal(err)
		}
		if len(frames) != 2 || !bytes.Equal(frames[0], a) || !bytes.Equal(frames[1], b) {
			t.Fatalf("frames % X, want % X and % X", frames, a, b)
		}
		if dropped != 2 {
			t.Fatalf("%d bytes dropped, want the 2 between the frames", dropped)
		}
	})
}
