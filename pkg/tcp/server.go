package tcp

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mcpgw/mcpgw/pkg/request"
	"github.com/mcpgw/mcpgw/pkg/trace"
)

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = errors.New("tcp: server closed")

// Server accepts Modbus TCP connections. Zero values of the limits take
// the defaults noted on each field.
type Server struct {
	Handler     request.Handler
	MaxConns    int           // open connections at most: default 1000
	IdleTimeout time.Duration // close a connection silent this long: default 60s
	// RefusalPace spaces a connection's refusals: exceptions to requests
	// that reached no device (Attempts 0: rejected, offline, no route,
	// busy), so that a client that loops on them as fast as it is
	// answered cannot take the CPU the live devices' transactions need.
	// Each refusal takes one of a connection's credits; credit comes back
	// one per RefusalPace and one per request a device answered, up to
	// RefusalBurst (a new connection starts with one): a SCADA whose scan
	// meets a few offline units among live ones is never held back, a
	// client that only gets refusals gets one per RefusalPace, however
	// often it reconnects. 0: 10 ms; <0: none.
	RefusalPace time.Duration
	// Allow lists the client networks that may connect; a connection
	// from anywhere else is closed at accept. Empty: any.
	Allow []netip.Prefix
	// MaxConnsPerIP caps the connections open from one address, so one
	// misbehaving client cannot take every slot. 0: no cap.
	MaxConnsPerIP int
	// TLS, if set, makes this a Modbus/TCP Security listener: each
	// connection is a TLS server connection with this configuration, its
	// handshake done before any request is read (within 10 s). Identify
	// then gives the connection's role and peer for its requests; an
	// error refuses the connection.
	TLS      *tls.Config
	Identify func(tls.ConnectionState) (role, peer string, err error)
	// Framing cuts requests and answers: nil is MBAP (Modbus TCP).
	Framing Framing
	Log     *slog.Logger

	mu       sync.Mutex
	listener net.Listener
	conns    map[*conn]struct{}
	closing  atomic.Bool
	wg       sync.WaitGroup
	nextID   atomic.Uint64

	perIP           map[netip.Addr]int // open connections by client address
	malformed       logEvery           // malformed requests
	handshake       logEvery           // failed TLS handshakes
	handshakeFailed atomic.Uint64
	refusals        [nRefusals]struct {
		n   atomic.Uint64
		log logEvery
	}
	ctx    context.Context
	cancel context.CancelFunc
}

type conn struct {
	srv      *Server
	nc       net.Conn
	id       uint64
	ip       netip.Addr
	since    time.Time
	requests atomic.Uint64
}

// Client is an open connection, for the status page.
type Client struct {
	Addr     string
	Since    time.Time
	Requests uint64
}

// Clients returns the open connections.
func (s *Server) Clients() []Client {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Client, 0, len(s.conns))
	for c := range s.conns {
		out = append(out, Client{Addr: c.nc.RemoteAddr().String(), Since: c.since, Requests: c.requests.Load()})
	}
	return out
}

// Refusal is why a connection was closed at accept.
type Refusal int

const (
	NotAllowed    Refusal = iota // its address is not in Allow
	TooManyFromIP                // its address has MaxConnsPerIP open
	Full                         // MaxConns are open
	nRefusals
)

var refusalKeys = [nRefusals]string{"server.allow", "server.max_conns_per_ip", "server.max_conns"}

// Refused returns how many connections were refused for reason r.
func (s *Server) Refused(r Refusal) uint64 { return s.refusals[r].n.Load() }

// refuse closes a connection refused at accept; it is logged at most once
// a second per reason, with how many more since.
func (s *Server) refuse(nc net.Conn, r Refusal, limit int) {
	nc.Close()
	s.refusals[r].n.Add(1)
	s.refusals[r].log.do(func(n uint64) {
		attrs := []any{"client", nc.RemoteAddr().String(), "key", refusalKeys[r], "refused_since_last_logged", n}
		if limit > 0 {
			attrs = append(attrs, "limit", limit)
		}
		s.log().Warn("connection refused", attrs...)
	})
}

// logEvery lets something be logged at most once per logEveryPeriod: a
// broken or hostile client reconnects and tries again at once.
type logEvery struct {
	n  atomic.Uint64 // occurrences since the last logged
	at atomic.Int64  // when one was last logged, unix ns
}

const logEveryPeriod = time.Second

// do counts an occurrence and calls log with the count since the last
// one logged, if none was logged in the last period.
func (l *logEvery) do(log func(n uint64)) {
	n := l.n.Add(1)
	now := time.Now().UnixNano()
	last := l.at.Load()
	if now-last < int64(logEveryPeriod) || !l.at.CompareAndSwap(last, now) {
		return
	}
	l.n.Store(0)
	log(n)
}

func (s *Server) log() *slog.Logger {
	if s.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Log
}

// Serve accepts connections on l until Shutdown, serving each in its own
// goroutine. It always returns a non-nil error.
func (s *Server) Serve(l net.Listener) error {
	s.mu.Lock()
	if s.conns == nil {
		s.conns = make(map[*conn]struct{})
		s.ctx, s.cancel = context.WithCancel(context.Background())
	}
	s.listener = l
	s.mu.Unlock()
	maxConns := s.MaxConns
	if maxConns <= 0 {
		maxConns = 1000
	}
	var backoff time.Duration
	for {
		nc, err := l.Accept()
		if err != nil {
			if s.closing.Load() {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.EMFILE) {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.log().Warn("accept failed, backing off", "err", err, "retry_in", backoff)
				time.Sleep(backoff)
				continue
			}
			return fmt.Errorf("tcp: accept: %w", err)
		}
		backoff = 0
		s.nextID.Add(1)
		c := &conn{srv: s, nc: quiet(nc), id: connIDs.Add(1), since: time.Now()}
		if ta, ok := nc.RemoteAddr().(*net.TCPAddr); ok {
			c.ip = clientAddr(ta.AddrPort()).Addr()
		}
		if len(s.Allow) > 0 && !slices.ContainsFunc(s.Allow, func(p netip.Prefix) bool { return p.Contains(c.ip) }) {
			s.refuse(nc, NotAllowed, 0)
			continue
		}
		s.mu.Lock()
		refusal := nRefusals
		switch {
		case len(s.conns) >= maxConns:
			refusal = Full
		case s.MaxConnsPerIP > 0 && s.perIP[c.ip] >= s.MaxConnsPerIP:
			refusal = TooManyFromIP
		default:
			s.conns[c] = struct{}{}
			if s.perIP == nil {
				s.perIP = make(map[netip.Addr]int)
			}
			s.perIP[c.ip]++
			s.wg.Add(1)
		}
		s.mu.Unlock()
		switch refusal {
		case Full:
			s.refuse(nc, Full, maxConns)
			continue
		case TooManyFromIP:
			s.refuse(nc, TooManyFromIP, s.MaxConnsPerIP)
			continue
		}
		if s.TLS != nil {
			c.nc = tls.Server(c.nc, s.TLS)
		}
		go c.serve()
	}
}

// Shutdown stops accepting, closes idle connections, lets transactions in
// flight finish and answer, and returns when every connection is closed or
// ctx ends (then it closes the rest and returns ctx's error).
func (s *Server) Shutdown(ctx context.Context) error {
	s.closing.Store(true)
	s.mu.Lock()
	if s.listener != nil {
		s.listener.Close()
	}
	for c := range s.conns {
		// A connection waiting for a request wakes now; one in a
		// transaction finishes it, answers, then sees the deadline.
		c.nc.SetReadDeadline(time.Now())
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.mu.Lock()
		if s.cancel != nil {
			s.cancel()
		}
		for c := range s.conns {
			c.nc.Close()
		}
		s.mu.Unlock()
		<-done
		return ctx.Err()
	}
}

// Accepted returns how many connections were accepted (refused ones
// included: they are closed after the accept).
func (s *Server) Accepted() uint64 { return s.nextID.Load() }

// RefusalBurst is how many refusals a connection may have in a row
// before they are spaced (see Server.RefusalPace).
const RefusalBurst = 32

// connIDs numbers connections across every server of the process, from
// 1: a connection's id (Request.ConnID) is unique whichever listener took
// it.
var connIDs atomic.Uint64

// HandshakesFailed returns how many TLS handshakes failed.
func (s *Server) HandshakesFailed() uint64 { return s.handshakeFailed.Load() }

// handshakeTimeout bounds a TLS handshake.
const handshakeTimeout = 10 * time.Second

// secure does c's TLS handshake and identifies its client. A failure is
// logged with the reason and the peer's address, at most once a second
// with how many more since.
func (c *conn) secure(req *request.Request) bool {
	s := c.srv
	tc, ok := c.nc.(*tls.Conn)
	if !ok {
		return true
	}
	ctx, cancel := context.WithTimeout(s.ctx, handshakeTimeout)
	defer cancel()
	err := tc.HandshakeContext(ctx)
	if err == nil && s.Identify != nil {
		req.Role, req.Peer, err = s.Identify(tc.ConnectionState())
	}
	if err != nil {
		if s.closing.Load() {
			return false // cut short by Shutdown, not refused
		}
		s.handshakeFailed.Add(1)
		s.handshake.do(func(n uint64) {
			s.log().Warn("TLS connection refused", "client", c.nc.RemoteAddr().String(), "err", err, "refused_since_last_logged", n)
		})
		return false
	}
	return true
}

// malformed logs a request that could not be read, at most once a
// second, with how many more there were since.
func (s *Server) malformedRequest(client string, err *FrameError) {
	s.malformed.do(func(n uint64) {
		if err.Close {
			s.log().Warn("malformed request, closing connection", "client", client, "err", err.Err, "closed_since_last_logged", n)
			return
		}
		s.log().Warn("malformed request dropped", "client", client, "err", err.Err, "dropped_since_last_logged", n)
	})
}

// NumConns returns the number of open connections.
func (s *Server) NumConns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

func (c *conn) serve() {
	s := c.srv
	client := c.nc.RemoteAddr().String()
	log := s.log()
	defer func() {
		if v := recover(); v != nil {
			log.Error("panic serving connection", "client", client, "panic", v, "stack", string(debug.Stack()))
		}
		c.nc.Close()
		s.mu.Lock()
		delete(s.conns, c)
		if s.perIP[c.ip]--; s.perIP[c.ip] <= 0 {
			delete(s.perIP, c.ip)
		}
		s.mu.Unlock()
		s.wg.Done()
		log.Debug("client disconnected", "client", client, "conn", c.id)
	}()
	log.Debug("client connected", "client", client, "conn", c.id)
	idle := s.IdleTimeout
	if idle <= 0 {
		idle = 60 * time.Second
	}
	pace := s.RefusalPace
	if pace == 0 {
		pace = 10 * time.Millisecond
	}
	// A new connection has credit for one refusal: a client that
	// reconnects to start afresh gains nothing.
	credit, lastRefill := 1.0, time.Now()
	br := bufio.NewReaderSize(c.nc, 4096)
	framing := s.Framing
	if framing == nil {
		framing = MBAP{}
	}
	hlen := framing.HeaderLen()
	var (
		in  [MaxADU]byte
		out = make([]byte, 0, MaxADU)
		req = request.Request{Client: client, ConnID: c.id}
	)
	if a, ok := c.nc.RemoteAddr().(*net.TCPAddr); ok {
		req.Addr = clientAddr(a.AddrPort())
	}
	if !c.secure(&req) {
		return
	}
	for !s.closing.Load() {
		c.nc.SetReadDeadline(time.Now().Add(idle))
		tid, unit, body, err := framing.Read(br, in[:])
		var fe *FrameError
		switch {
		case errors.As(err, &fe):
			s.malformedRequest(client, fe)
			if fe.Close {
				return
			}
			continue
		case errors.Is(err, io.ErrUnexpectedEOF):
			log.Warn("connection closed inside a request", "client", client, "err", err)
			return
		case err != nil:
			if !errors.Is(err, io.EOF) && !s.closing.Load() {
				log.Debug("connection closed while reading a request", "client", client, "err", err)
			}
			return
		}
		req.TID, req.Unit, req.PDU = tid, unit, body
		req.Reset()
		req.Trace = trace.Next()
		c.requests.Add(1)
		frame := s.Handler.ServeModbus(s.ctx, &req, out[:hlen])
		if frame == nil {
			continue
		}
		if pace > 0 {
			refusal := req.Attempts == 0 && len(frame) > hlen && frame[hlen]&0x80 != 0
			switch {
			case refusal:
				now := time.Now()
				credit = min(RefusalBurst, credit+float64(now.Sub(lastRefill))/float64(pace))
				lastRefill = now
				if credit < 1 {
					d := time.Duration((1 - credit) * float64(pace))
					time.Sleep(d)
					credit, lastRefill = 1, now.Add(d)
				}
				credit--
			case req.Attempts > 0 && credit < RefusalBurst:
				credit++ // a device answered (or was asked)
			}
		}
		frame = framing.Finish(frame, tid, unit)
		c.nc.SetWriteDeadline(time.Now().Add(idle))
		if _, err := c.nc.Write(frame); err != nil {
			log.Debug("client gone before its answer", "client", client, "tid", tid, "err", err)
			return
		}
	}
}

// clientAddr is a client's address as networks are matched against it:
// an IPv4 client on an IPv6 socket is its IPv4 address, and a link-local
// IPv6 client's zone is dropped (a prefix never contains an address with
// a zone).
func clientAddr(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap().WithZone(""), ap.Port())
}
