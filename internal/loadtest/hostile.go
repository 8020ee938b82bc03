package loadtest

import (
	"context"
	"encoding/binary"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mcpgw/mcpgw/pkg/tcp"
)

// Hostile runs clients that send what no device can use, as fast as the
// gateway answers them, until ctx ends: function code 0 and 128-255,
// known function codes with bodies of the wrong length or quantities
// beyond the spec, requests to the dead units (configured units that
// never answer; one drawn at random for each, at a random address, so
// that the gateway's shared reads do not answer them together), and malformed MBAP headers (after which the
// gateway closes the connection and the client dials again). It returns
// how many requests were sent.
func Hostile(ctx context.Context, addr string, clients int, dead []byte, seed uint64) int {
	var sent atomic.Int64
	var wg sync.WaitGroup
	for k := range clients {
		wg.Go(func() {
			rnd := rand.New(rand.NewPCG(seed, uint64(k)))
			var conn net.Conn
			defer func() {
				if conn != nil {
					conn.Close()
				}
			}()
			hdr, body := make([]byte, tcp.HeaderLen), make([]byte, 256)
			for tid := uint16(1); ctx.Err() == nil; tid++ {
				if conn == nil {
					c, err := (&net.Dialer{Timeout: time.Second}).DialContext(ctx, "tcp", addr)
					if err != nil {
						time.Sleep(10 * time.Millisecond)
						continue
					}
					conn = c
				}
				unit, p := byte(1), []byte(nil)
				switch rnd.IntN(6) {
				case 0:
					p = []byte{0, 0, 1}
				case 1:
					p = []byte{byte(128 + rnd.IntN(128)), 0, 0, 0, 1}
				case 2:
					p = []byte{0x03, 0, 0, 0, 1, 0xFF} // a byte too many
				case 3:
					p = []byte{0x03, 0, 0, 0x07, 0xD0} // 2000 registers
				case 4: // at a random address: shared reads do not join them
					unit, p = dead[rnd.IntN(len(dead))], []byte{0x03, byte(rnd.IntN(256)), byte(rnd.IntN(256)), 0, 1}
				case 5:
					conn.Write([]byte{0, 1, 0xAB, 0xCD, 0, 6, 1, 3}) // protocol id not 0
					io.Copy(io.Discard, conn)                        // until the gateway closes it
					conn.Close()
					conn = nil
					sent.Add(1)
					continue
				}
				sent.Add(1)
				conn.SetDeadline(time.Now().Add(5 * time.Second))
				if _, err := exchange(conn, tcp.AppendADU(nil, tid, unit, p), hdr, body, tid, unit); err != nil {
					conn.Close()
					conn = nil
				}
			}
		})
	}
	wg.Wait()
	return int(sent.Load())
}

// Writes writes register addr of unit through the gateway at addr every
// interval until ctx ends, and returns the latency of each write that was
// answered with its echo, and how many were not.
func Writes(ctx context.Context, gw string, unit byte, reg int, interval time.Duration) (lat []time.Duration, failed int) {
	c := NewClient(gw, 30*time.Second, 1)
	defer c.Close()
	for v := uint16(1); ctx.Err() == nil; v++ {
		start := time.Now()
		p, err := c.Write(ctx, unit, reg, v)
		switch {
		case err != nil && ctx.Err() != nil:
			return lat, failed
		case err != nil || len(p) != 5 || binary.BigEndian.Uint16(p[3:]) != v:
			failed++
		default:
			lat = append(lat, time.Since(start))
		}
		select {
		case <-ctx.Done():
		case <-time.After(interval):
		}
	}
	return lat, failed
}
