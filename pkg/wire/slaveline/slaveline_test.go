package slaveline

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/mcpgw/mcpgw/pkg/pdu"
	"github.com/mcpgw/mcpgw/pkg/request"
	"github.com/mcpgw/mcpgw/pkg/rtu"
	"github.com/mcpgw/mcpgw/pkg/wire/serialport"
)

// TestAnswersAndSilences: the master gets the forwarded answer and a
// device's exception; silence for the gateway's 0x0B, for an answer that
// comes after the master's timeout, and for another slave's unit.
func TestAnswersAndSilences(t *testing.T) {
	p, err := serialport.NewPty()
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	handler := request.HandlerFunc(func(_ context.Context, tr *request.Request, dst []byte) []byte {
		switch tr.Unit {
		case 2:
			return pdu.AppendException(dst, tr.PDU[0], pdu.GatewayTargetNoResponse)
		case 3:
			time.Sleep(150 * time.Millisecond)
		case 4:
			return pdu.AppendException(dst, tr.PDU[0], pdu.IllegalDataAddress)
		}
		return append(dst, tr.PDU[0], 2, 0, tr.Unit)
	})
	l := New(Config{Name: "hmi", Units: []byte{1, 2, 3, 4}, Timeout: 100 * time.Millisecond, Handler: handler,
		Open: func() (rtu.Port, error) {
			return serialport.Open(p.Path, serialport.Settings{Baud: 19200, DataBits: 8, Parity: 'N', StopBits: 1})
		}})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { l.Run(ctx) })
	defer func() { cancel(); wg.Wait() }()
	time.Sleep(100 * time.Millisecond)
	master := p.Device
	ask := func(unit byte) []byte {
		master.Write(rtu.AppendADU(nil, unit, []byte{3, 0, 0, 0, 1}))
		master.SetReadTimeout(400 * time.Millisecond)
		var got []byte
		buf := make([]byte, 64)
		for {
			n, _ := master.Read(buf)
			if n == 0 {
				return got
			}
			got = append(got, buf[:n]...)
		}
	}
	if got := ask(1); string(got) != string(rtu.AppendADU(nil, 1, []byte{3, 2, 0, 1})) {
		t.Fatalf("unit 1: % X", got)
	}
	if got := ask(4); string(got) != string(rtu.AppendADU(nil, 4, []byte{0x83, 2})) {
		t.Fatalf("a device's exception: % X", got)
	}
	for _, u := range []byte{2, 3, 9} {
		if got := ask(u); len(got) != 0 {
			t.Fatalf("unit %d: % X, want silence", u, got)
		}
	}
	if st := l.Stats(); st.Requests != 4 || st.Answered != 2 || st.Silent != 1 || st.Late != 1 {
		t.Fatalf("stats %+v", st)
	}
}
