package loadtest

import (
	"context"
	"io"
	"net"
	"testing"
	"time"

	"github.com/mcpgw/mcpgw/pkg/request"
	"github.com/mcpgw/mcpgw/pkg/tcp"
	"github.com/mcpgw/mcpgw/pkg/tools/sim"
	"github.com/mcpgw/mcpgw/pkg/wire/serialport"
)

// TestRunSideBySide polls a simulated line directly and a Modbus TCP
// server in turn. The TCP server gives unit 2 another unit's values, so
// the same requests must come out right directly and wrong through TCP
// for unit 2 only: a mix-up of requests between the two sides, or a
// check that passes anything, fails the test.
func TestRunSideBySide(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	line, err := serialport.NewPty()
	if err != nil {
		t.Fatal(err)
	}
	defer line.Close()
	dev := &sim.Line{Port: line.Device, Units: sim.NewUnits([]byte{1, 2}, 10000)}
	go dev.Serve(ctx)
	port, err := serialport.Open(line.Path, serialport.Settings{Baud: 19200, DataBits: 8, Parity: 'N', StopBits: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer port.Close()

	models := sim.NewUnits([]byte{1, 3}, 10000)
	models[2] = models[3] // unit 2 answers with unit 3's values
	srv := &tcp.Server{Handler: request.HandlerFunc(func(_ context.Context, r *request.Request, dst []byte) []byte {
		return models[r.Unit].Handle(r.PDU, dst)
	})}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	defer srv.Shutdown(ctx)

	el, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer el.Close()
	go func() {
		for {
			c, err := el.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()

	const n = 40
	cfg := Config{Addr: l.Addr().String(), Requests: n, Units: []byte{1, 2}, Qty: 10, Seed: 7}
	direct, via, echo, err := RunSideBySide(ctx, port, 2*time.Millisecond, el.Addr().String(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if direct.OK != n || direct.Wrong != 0 || len(direct.Latencies) != n {
		t.Fatalf("direct: %d right, %d wrong, %d latencies, errors %v; want %d right", direct.OK, direct.Wrong, len(direct.Latencies), direct.Errors, n)
	}
	if via.OK == 0 || via.Wrong == 0 || via.OK+via.Wrong != n {
		t.Fatalf("through TCP: %d right, %d wrong, errors %v; want both, adding up to %d", via.OK, via.Wrong, via.Errors, n)
	}
	if len(echo) != n {
		t.Fatalf("%d echo round trips, want %d", len(echo), n)
	}
	for _, d := range echo {
		if d <= 0 {
			t.Fatalf("echo round trip %v", d)
		}
	}
}
