package tcp

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// TestQuietConn: a connection read and written with raw system calls
// behaves as net.Conn does: whole writes larger than the socket's buffer,
// reads of what comes, deadlines, the peer's close as io.EOF.
func TestQuietConn(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	peer, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	nc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	c := quiet(nc)
	defer c.Close()
	if _, ok := c.(*quietConn); !ok {
		t.Fatalf("quiet(%T) = %T, want a *quietConn", nc, c)
	}

	// A read with nothing to read ends at its deadline.
	c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	if _, err := c.Read(make([]byte, 10)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past its deadline: %v, want a deadline error", err)
	}
	c.SetReadDeadline(time.Time{})

	// 4 MB each way: the write waits for room, the reads take it all.
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<18)
	got := make(chan []byte)
	go func() {
		b, _ := io.ReadAll(io.LimitReader(peer, int64(len(big))))
		got <- b
	}()
	if n, err := c.Write(big); n != len(big) || err != nil {
		t.Fatalf("write: %d, %v", n, err)
	}
	if b := <-got; !bytes.Equal(b, big) {
		t.Fatalf("the peer read %d bytes, not what was written", len(b))
	}
	go peer.Write(big)
	if b, err := io.ReadAll(io.LimitReader(c, int64(len(big)))); err != nil || !bytes.Equal(b, big) {
		t.Fatalf("read %d bytes (%v), not what the peer wrote", len(b), err)
	}

	// The peer's close is the end.
	peer.Close()
	if _, err := c.Read(make([]byte, 10)); err != io.EOF {
		t.Fatalf("read after the peer closed: %v, want io.EOF", err)
	}
}
