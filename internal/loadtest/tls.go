package loadtest

import (
	"context"
	"crypto/tls"
	"math/rand/v2"
	"net"
	"time"
)

// SideBySideTLS makes cfg.Requests polls through a plain Modbus TCP
// listener and as many through a Modbus/TCP Security one, in turn, each
// client on one connection, cfg.Think after each: taken in turn, both see
// the same moments of the machine, and the difference is what TLS costs.
func SideBySideTLS(ctx context.Context, plainAddr, tlsAddr string, tlsCfg *tls.Config, cfg Config) (plain, secure *Result) {
	cfg.defaults(10 * time.Second)
	clients := []*Client{NewClient(plainAddr, cfg.Timeout, 1), NewClient(tlsAddr, cfg.Timeout, 1)}
	clients[1].tls = tlsCfg
	defer clients[0].Close()
	defer clients[1].Close()
	results := []clientResult{newClientResult(), newClientResult()}
	rnd := rand.New(rand.NewPCG(cfg.Seed, 7))
	start := time.Now()
	for i := 0; i < cfg.Requests && ctx.Err() == nil; i++ {
		for j := range 2 {
			k := (i + j) % 2 // alternate which goes first
			one := cfg
			one.Requests = 1
			poll(ctx, &one, rnd, &results[k], func(unit byte, addr, qty int) ([]byte, time.Duration, error) {
				return clients[k].Read(ctx, unit, addr, qty)
			})
		}
	}
	elapsed := time.Since(start)
	return merge(results[:1], elapsed), merge(results[1:], elapsed)
}

// Handshakes opens TLS connections to addr one after another for d, each
// a full handshake (no session resumption), and returns how many it
// completed and the errors by kind.
func Handshakes(ctx context.Context, addr string, cfg *tls.Config, d time.Duration) (n int, errs map[string]int) {
	cfg = cfg.Clone()
	cfg.ClientSessionCache = nil
	errs = map[string]int{}
	dl := tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second}, Config: cfg}
	for end := time.Now().Add(d); time.Now().Before(end) && ctx.Err() == nil; {
		c, err := dl.DialContext(ctx, "tcp", addr)
		if err != nil {
			if ctx.Err() == nil {
				errs[errKind(err)]++
			}
			continue
		}
		c.Close()
		n++
	}
	return n, errs
}
