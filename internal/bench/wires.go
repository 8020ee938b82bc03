//go:build linux

package bench

import (
	"context"
	"fmt"
	"io"
	"net"
	"os/exec"
	"time"

	"github.com/mcpgw/mcpgw/internal/loadtest"
	"github.com/mcpgw/mcpgw/pkg/registers"
	"github.com/mcpgw/mcpgw/pkg/request"
	"github.com/mcpgw/mcpgw/pkg/tcp"
	"github.com/mcpgw/mcpgw/pkg/wire/ascii"
	"github.com/mcpgw/mcpgw/pkg/wire/netserial"
	"github.com/mcpgw/mcpgw/pkg/wire/serialport"
)

// benchWires measures each of the other wires as the latency the
// gateway adds over a direct master on the same wire, polls taken in
// turn on an idle line (RunPair).
func benchWires(ctx context.Context, rep *report, n func(int) int, stderr io.Writer) error {
	rep.printf("\n## Every other wire: the latency the gateway adds\n\n")
	base := &benchLine{name: "wires", baud: 115200, units: []byte{71, 72}}
	asc := &benchLine{name: "ascii", baud: 115200, units: []byte{74}, ascii: true}
	nport := &benchLine{name: "nport", baud: 115200, units: []byte{73}}
	for _, l := range []*benchLine{base, asc, nport} {
		if err := l.open(ctx); err != nil {
			return err
		}
		defer l.close()
	}
	// The serial device server: socat bridging a TCP port to each end of
	// the nport line, one for the gateway and one for the direct master.
	_, err := exec.LookPath("socat")
	haveSocat := err == nil
	var gwBridge, twinBridge string
	if haveSocat {
		nport.master.Close() // the direct master goes through its bridge
		for _, b := range []struct {
			path string
			addr *string
		}{{nport.gwPath, &gwBridge}, {nport.twinPath, &twinBridge}} {
			a, err := freeAddr()
			if err != nil {
				return err
			}
			_, port, _ := net.SplitHostPort(a)
			cmd := exec.CommandContext(ctx, "socat", "TCP-LISTEN:"+port+",bind=127.0.0.1,reuseaddr", "OPEN:"+b.path+",raw,echo=0")
			if err := cmd.Start(); err != nil {
				return err
			}
			defer func() { cmd.Process.Kill(); cmd.Wait() }()
			*b.addr = a
		}
		time.Sleep(200 * time.Millisecond)
	}
	// A Modbus TCP device, in this process: unit 75's registers.
	model := registers.New(10000)
	model.Pattern(75)
	dev := &tcp.Server{Handler: request.HandlerFunc(func(_ context.Context, tr *request.Request, dst []byte) []byte {
		return model.Handle(tr.PDU, dst)
	}), RefusalPace: -1}
	devL, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	go dev.Serve(devL)
	defer dev.Shutdown(context.Background())
	// The slave line: a pseudo-terminal, the gateway at one end as a
	// slave, a master at the other.
	pty, err := serialport.NewPty()
	if err != nil {
		return err
	}
	defer pty.Close()

	rtuAddr, err := freeAddr()
	if err != nil {
		return err
	}
	buses := fmt.Sprintf("[[bus]]\nname = \"wires\"\nport = %q\nbaud = 115200\nparity = \"N\"\nstop_bits = 2\nunits = [71, 72]\n", base.gwPath) +
		fmt.Sprintf("[[bus]]\nname = \"ascii\"\nport = %q\nmode = \"ascii\"\nbaud = 115200\ndata_bits = 8\nparity = \"N\"\nstop_bits = 2\nunits = [74]\n", asc.gwPath) +
		fmt.Sprintf("[[bus]]\nname = \"device\"\nport = \"modbus+tcp://%s\"\nunits = [75]\n", devL.Addr()) +
		fmt.Sprintf("[[slave_line]]\nname = \"hmi\"\nport = %q\nbaud = 115200\nparity = \"N\"\nstop_bits = 2\nunits = [71, 72]\nforward = \"wires\"\n", pty.Path)
	if haveSocat {
		buses += fmt.Sprintf("[[bus]]\nname = \"nport\"\nport = \"tcp://%s\"\nbaud = 115200\nparity = \"N\"\nstop_bits = 2\nunits = [73]\n", gwBridge)
	}
	gw, addr, err := startGatewayWith(fmt.Sprintf("rtu_listen = %q\n", rtuAddr), buses, 100, "warn", stderr)
	if err != nil {
		return err
	}
	defer gw.stop()

	timeout := 2 * time.Second
	mbap := func(a string) *loadtest.Client { return loadtest.NewClient(a, timeout, 1) }
	overTCP := func(a string) (*loadtest.Master, func(), error) {
		p, err := netserial.Dial(a, timeout)
		if err != nil {
			return nil, nil, err
		}
		return loadtest.NewMaster(p, 0, timeout), func() { p.Close() }, nil
	}
	rtuClient, closeRTU, err := overTCP(rtuAddr)
	if err != nil {
		return err
	}
	defer closeRTU()
	via := mbap(addr)
	defer via.Close()
	devClient := mbap(devL.Addr().String())
	defer devClient.Close()
	direct := loadtest.NewMaster(base.master, base.gap, timeout) // one master on the line: it keeps t3.5 from its own last answer
	type row struct {
		wire, direct, gateway string
		units                 []byte
		d, v                  loadtest.Reader
	}
	rows := []row{
		{"RTU over TCP, clients' side (server.rtu_listen)", "an RTU master on the line", "an RTU over TCP client",
			base.units, direct, rtuClient},
		{"Modbus ASCII line (mode = \"ascii\")", "an ASCII master on the line", "a Modbus TCP client",
			asc.units, loadtest.NewMaster(ascii.New(asc.master), asc.gap, timeout), via},
		{"Modbus TCP device as a line (modbus+tcp://)", "a Modbus TCP client of the device", "a Modbus TCP client",
			[]byte{75}, devClient, via},
		{"slave line (a serial master through the gateway to an RTU line)", "an RTU master on the line", "an RTU master on the slave line",
			base.units, direct, loadtest.NewMaster(pty.Device, base.gap, timeout)},
	}
	if haveSocat {
		twin, closeTwin, err := overTCP(twinBridge)
		if err != nil {
			return err
		}
		defer closeTwin()
		rows = append(rows, row{"serial device server (tcp://, a socat bridge)", "an RTU master through the bridge", "a Modbus TCP client",
			nport.units, twin, via})
	}
	rep.printf("Each wire on a pseudo-terminal line at 115200 (unpaced) or on loopback TCP, %d polls of 10 holding registers, 5 ms apart, taken in turn by a direct master on the same wire and through the gateway, every value checked. The added latency is the gateway's whole share: its own hops (TCP and the line) and its work.\n\n", n(300))
	rep.printf("| wire | direct | through the gateway | polls | direct p50 | p99 | gateway p50 | p99 | added p50 | added p99 | wrong | failed |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for i, r := range rows {
		d, v := loadtest.RunPair(ctx, r.d, r.v, loadtest.Config{Requests: n(300), Units: r.units, Qty: 10, Think: 5 * time.Millisecond, Seed: uint64(40 + i)})
		rep.printf("| %s | %s | %s | %d | %s | %s | %s | %s | %s | %s | %d | %d |\n", r.wire, r.direct, r.gateway, d.OK,
			us(d.Percentile(50)), us(d.Percentile(99)), us(v.Percentile(50)), us(v.Percentile(99)),
			us(v.Percentile(50)-d.Percentile(50)), us(v.Percentile(99)-d.Percentile(99)), d.Wrong+v.Wrong, errCount(d)+errCount(v))
		if d.OK == 0 || v.OK == 0 || d.Wrong+v.Wrong > 0 {
			return fmt.Errorf("wires: %s: %d and %d right answers, %d wrong; errors %v %v", r.wire, d.OK, v.OK, d.Wrong+v.Wrong, d.Errors, v.Errors)
		}
	}
	if !haveSocat {
		rep.printf("\nThe serial device server row needs socat (apt-get install socat).\n")
	}
	return nil
}
