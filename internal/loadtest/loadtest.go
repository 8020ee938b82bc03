// Package loadtest drives a Modbus TCP server with many concurrent clients
// and checks every answer: the load behind mcpgw-bench and its soak.
package loadtest

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/mcpgw/mcpgw/pkg/pdu"
	"github.com/mcpgw/mcpgw/pkg/registers"
	"github.com/mcpgw/mcpgw/pkg/tcp"
)

// Config says what load to make. Requests read Qty holding registers
// (FC 03) at random addresses below MaxAddr from random Units; answers are
// checked against registers.Pattern, what mcpgw sim serves.
type Config struct {
	Addr     string
	Clients  int
	Duration time.Duration // how long to run; 0: until each client made Requests
	Requests int           // per client; 0: until Duration
	Units    []byte
	Qty      int // registers per read, 1..125
	MinAddr  int // first address requests may start at
	MaxAddr  int // exclusive; default 9000
	Timeout  time.Duration
	Think    time.Duration // pause after each answer, as a polling client makes
	Seed     uint64
	// Distinct gives each client starting addresses of its own, so that
	// no two clients ever send the same read and the gateway's shared
	// reads never answer one client with another's transaction: a run
	// that measures how the line's queue shares the line between clients
	// wants that. With more clients than starting addresses it does
	// nothing.
	Distinct bool
	// Pattern is the value a unit's holding register holds, against
	// which answers are checked: default registers.PatternHolding, what
	// mcpgw sim serves.
	Pattern func(unit byte, addr int) uint16
}

// Result counts what happened.
type Result struct {
	Transactions int             // requests answered (right, wrong or exception)
	OK           int             // right answers
	Wrong        int             // answers with values that are not the unit's: must be 0
	Exceptions   map[byte]int    // exception code: count
	Errors       map[string]int  // transport errors: count
	PerClient    []int           // right answers per client
	Latencies    []time.Duration // of right answers
	ExcLatencies []time.Duration // of exception answers
	Elapsed      time.Duration
	FirstWrong   string
}

// Percentile returns the p-th percentile (0..100) of the latencies of
// right answers.
func (r *Result) Percentile(p float64) time.Duration { return Percentile(r.Latencies, p) }

// Percentile returns the p-th percentile (0..100) of ds.
func Percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(p / 100 * float64(len(s)-1))
	return s[i]
}

// Add adds o's counts, latencies and time to r's: runs made one after
// the other (slices of a measurement) summed up as one.
func (r *Result) Add(o *Result) {
	if r.Exceptions == nil {
		r.Exceptions, r.Errors = map[byte]int{}, map[string]int{}
	}
	r.Transactions += o.Transactions
	r.OK += o.OK
	r.Wrong += o.Wrong
	for k, v := range o.Exceptions {
		r.Exceptions[k] += v
	}
	for k, v := range o.Errors {
		r.Errors[k] += v
	}
	r.PerClient = append(r.PerClient, o.PerClient...)
	r.Latencies = append(r.Latencies, o.Latencies...)
	r.ExcLatencies = append(r.ExcLatencies, o.ExcLatencies...)
	r.Elapsed += o.Elapsed
	if r.FirstWrong == "" {
		r.FirstWrong = o.FirstWrong
	}
}

// Fairness returns the fewest and most right answers any client got.
func (r *Result) Fairness() (least, most int) {
	if len(r.PerClient) == 0 {
		return 0, 0
	}
	return slices.Min(r.PerClient), slices.Max(r.PerClient)
}

type clientResult struct {
	ok, wrong, total int
	exc              map[byte]int
	errs             map[string]int
	lat, excLat      []time.Duration
	firstWrong       string
}

// Run makes the load and returns when every client is done. The clients
// connect first, all of them, and then start together: cfg.Duration and
// the rates count from then, and a client that happened to connect
// sooner does not start ahead of the others (which would read as the
// gateway serving it more). One that could not connect keeps trying.
func Run(ctx context.Context, cfg Config) *Result {
	cfg.defaults(10 * time.Second)
	clients := make([]*Client, cfg.Clients)
	var wg sync.WaitGroup
	for k := range clients {
		clients[k] = NewClient(cfg.Addr, cfg.Timeout, 0)
		wg.Go(func() { clients[k].dial(ctx) })
	}
	wg.Wait()
	if cfg.Duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cfg.Duration)
		defer cancel()
	}
	results := make([]clientResult, cfg.Clients)
	start := time.Now()
	for k, c := range clients {
		wg.Go(func() { results[k] = runClient(ctx, cfg, k, c) })
	}
	wg.Wait()
	return merge(results, time.Since(start))
}

// merge adds up the clients' results.
func merge(results []clientResult, elapsed time.Duration) *Result {
	res := &Result{Exceptions: map[byte]int{}, Errors: map[string]int{}, Elapsed: elapsed}
	for _, c := range results {
		res.Transactions += c.total
		res.OK += c.ok
		res.Wrong += c.wrong
		res.PerClient = append(res.PerClient, c.ok)
		res.Latencies = append(res.Latencies, c.lat...)
		res.ExcLatencies = append(res.ExcLatencies, c.excLat...)
		for k, v := range c.exc {
			res.Exceptions[k] += v
		}
		for k, v := range c.errs {
			res.Errors[k] += v
		}
		if res.FirstWrong == "" {
			res.FirstWrong = c.firstWrong
		}
	}
	return res
}

func newClientResult() clientResult {
	return clientResult{exc: map[byte]int{}, errs: map[string]int{}}
}

// tally counts the answer p to a read of qty registers at addr of unit,
// and reports whether it was right (by pattern; nil: the simulator's).
func (cr *clientResult) tally(unit byte, addr, qty int, p []byte, lat time.Duration, pattern func(byte, int) uint16) bool {
	cr.total++
	if e, ok := pdu.IsException(p); ok {
		cr.exc[byte(e)]++
		cr.excLat = append(cr.excLat, lat)
		return false
	}
	if why := check(unit, addr, qty, p, pattern); why != "" {
		cr.wrong++
		if cr.firstWrong == "" {
			cr.firstWrong = why
		}
		return false
	}
	cr.ok++
	cr.lat = append(cr.lat, lat)
	return true
}

func runClient(ctx context.Context, cfg Config, k int, c *Client) clientResult {
	cfg = cfg.forClient(k)
	cr := newClientResult()
	rnd := rand.New(rand.NewPCG(cfg.Seed, uint64(k)))
	c.tid = uint16(rnd.Uint32())
	defer c.Close()
	poll(ctx, &cfg, rnd, &cr, func(unit byte, addr, qty int) ([]byte, time.Duration, error) {
		return c.Read(ctx, unit, addr, qty)
	})
	return cr
}

// forClient returns client k's share of cfg: with Distinct, a window of
// starting addresses of its own.
func (cfg Config) forClient(k int) Config {
	span := cfg.MaxAddr - cfg.Qty + 1 - cfg.MinAddr // starting addresses
	if !cfg.Distinct || cfg.Clients < 2 || span < cfg.Clients {
		return cfg
	}
	w := span / cfg.Clients
	cfg.MinAddr += k * w
	cfg.MaxAddr = cfg.MinAddr + w + cfg.Qty - 1
	return cfg
}

// poll makes cfg's requests one at a time with read, tallying each answer
// in cr and pausing cfg.Think after each right one, until it has made
// cfg.Requests or ctx ends. Errors are counted by their text, except the
// context's own (the run's end cutting a request short); a write error
// (errWrite: the line is gone) ends the run.
func poll(ctx context.Context, cfg *Config, rnd *rand.Rand, cr *clientResult, read func(unit byte, addr, qty int) ([]byte, time.Duration, error)) {
	for i := 0; cfg.Requests == 0 || i < cfg.Requests; i++ {
		if ctx.Err() != nil {
			return
		}
		unit, addr := cfg.pick(rnd)
		p, lat, err := read(unit, addr, cfg.Qty)
		if err != nil {
			if !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
				cr.errs[err.Error()]++
			}
			if errors.Is(err, errWrite) {
				return
			}
			continue
		}
		if cr.tally(unit, addr, cfg.Qty, p, lat, cfg.Pattern) && cfg.Think > 0 {
			time.Sleep(cfg.Think)
		}
	}
}

// pick chooses the next request's unit and first address.
func (cfg *Config) pick(rnd *rand.Rand) (unit byte, addr int) {
	unit = cfg.Units[rnd.IntN(len(cfg.Units))]
	return unit, cfg.MinAddr + rnd.IntN(cfg.MaxAddr-cfg.Qty+1-cfg.MinAddr)
}

// Client is one Modbus TCP client, sending a request at a time. It
// dials when it has no connection and drops the connection after an
// error, as a SCADA poller does.
type Client struct {
	addr    string
	timeout time.Duration
	tls     *tls.Config // if set, Modbus/TCP Security: MBAP inside TLS
	conn    net.Conn
	tid     uint16
	req     []byte
	hdr     []byte
	body    []byte
}

func NewClient(addr string, timeout time.Duration, tid uint16) *Client {
	return &Client{addr: addr, timeout: timeout, tid: tid,
		req: make([]byte, 0, 16), hdr: make([]byte, tcp.HeaderLen), body: make([]byte, 256)}
}

// dialError marks a failure to connect, counted apart from failures on a
// connection; the caller pauses before trying again.
type dialError struct{ err error }

func (e dialError) Error() string { return "dial: " + errKind(e.err) }

// Read reads qty holding registers at addr of unit and returns the
// answer's PDU (valid until the next call) and the time from sending the
// request to its last byte. An error's text is its kind, for counting.
func (c *Client) Read(ctx context.Context, unit byte, addr, qty int) ([]byte, time.Duration, error) {
	return c.do(ctx, unit, []byte{pdu.ReadHoldingRegisters, byte(addr >> 8), byte(addr), byte(qty >> 8), byte(qty)})
}

// Write writes v to holding register reg of unit and returns the answer's
// PDU (valid until the next call).
func (c *Client) Write(ctx context.Context, unit byte, reg int, v uint16) ([]byte, error) {
	p, _, err := c.do(ctx, unit, []byte{pdu.WriteSingleRegister, byte(reg >> 8), byte(reg), byte(v >> 8), byte(v)})
	return p, err
}

// do sends request PDU p to unit and returns the answer's PDU (valid
// until the next call) and the time from sending to its last byte.
func (c *Client) do(ctx context.Context, unit byte, p []byte) ([]byte, time.Duration, error) {
	if c.conn == nil {
		if err := c.dial(ctx); err != nil {
			if ctx.Err() != nil {
				return nil, 0, ctx.Err()
			}
			time.Sleep(50 * time.Millisecond)
			return nil, 0, err
		}
	}
	c.tid++
	c.req = tcp.AppendADU(c.req[:0], c.tid, unit, p)
	start := time.Now()
	c.conn.SetDeadline(start.Add(c.timeout))
	n, err := exchange(c.conn, c.req, c.hdr, c.body, c.tid, unit)
	lat := time.Since(start)
	if err != nil {
		c.Close()
		if ctx.Err() != nil {
			return nil, 0, ctx.Err()
		}
		return nil, 0, errors.New(errKind(err))
	}
	return c.body[:n], lat, nil
}

// dial connects the client.
func (c *Client) dial(ctx context.Context) error {
	var (
		conn net.Conn
		err  error
	)
	if c.tls != nil {
		d := tls.Dialer{NetDialer: &net.Dialer{Timeout: c.timeout}, Config: c.tls}
		conn, err = d.DialContext(ctx, "tcp", c.addr)
	} else {
		d := net.Dialer{Timeout: c.timeout}
		conn, err = d.DialContext(ctx, "tcp", c.addr)
	}
	if err != nil {
		return dialError{err}
	}
	c.conn = conn
	return nil
}

func (c *Client) Close() {
	if c.conn != nil {
		c.conn.Close()
		c.conn = nil
	}
}

// exchange sends one request and reads its answer's PDU into body,
// returning its length. The answer must carry the request's tid and unit.
func exchange(conn net.Conn, req, hdr, body []byte, tid uint16, unit byte) (int, error) {
	if _, err := conn.Write(req); err != nil {
		return 0, err
	}
	if _, err := io.ReadFull(conn, hdr); err != nil {
		return 0, err
	}
	h, err := tcp.ParseHeader(hdr)
	if err != nil {
		return 0, err
	}
	if h.TID != tid || h.Unit != unit {
		return 0, fmt.Errorf("answer for tid %d unit %d to tid %d unit %d", h.TID, h.Unit, tid, unit)
	}
	n := h.PDULen()
	_, err = io.ReadFull(conn, body[:n])
	return n, err
}

// check compares a read's answer with pattern (nil: registers.Pattern).
func check(unit byte, addr, qty int, p []byte, pattern func(byte, int) uint16) string {
	if pattern == nil {
		pattern = registers.PatternHolding
	}
	if len(p) != 2+2*qty || p[0] != pdu.ReadHoldingRegisters || int(p[1]) != 2*qty {
		return fmt.Sprintf("unit %d addr %d: answer % X has the wrong shape", unit, addr, p)
	}
	for i := range qty {
		if v, want := binary.BigEndian.Uint16(p[2+2*i:]), pattern(unit, addr+i); v != want {
			return fmt.Sprintf("unit %d register %d = %d, want %d", unit, addr+i, v, want)
		}
	}
	return ""
}

func errKind(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "connection closed"
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	}
	return err.Error()
}
