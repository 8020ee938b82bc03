package gateway_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mcpgw/mcpgw/pkg/ops/capture"
	"github.com/mcpgw/mcpgw/pkg/tools/replay"
	"github.com/mcpgw/mcpgw/pkg/tools/sim"
	"github.com/mcpgw/mcpgw/pkg/wire/serialport"
)

// runSession starts a gateway on a virtual line to dev, with the line
// captured to capPath, sends reqs (unit, PDU) one by one on one
// connection, and returns the answers' PDUs once the gateway has stopped
// (and closed the capture).
func runSession(t *testing.T, dev *sim.Line, line *serialport.Pty, capPath string, reqs [][]byte) [][]byte {
	t.Helper()
	defer dev.Start()()
	svc, addr := startService(t, lineConfig(line.Path, fmt.Sprintf("retries = 0\ncapture = %q\n", capPath)), slog.New(slog.DiscardHandler))
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	var answers [][]byte
	for i, r := range reqs {
		answers = append(answers, exchange(t, c, uint16(i+1), r[0], r[1:]))
	}
	c.Close()
	sctx, scancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer scancel()
	svc.Shutdown(sctx)
	return answers
}

func TestCaptureReplayRoundTrip(t *testing.T) {
	reqs := [][]byte{
		append([]byte{1, 0x03}, be16(0, 125)...),
		append([]byte{2, 0x01}, be16(10, 2000)...),
		append([]byte{3, 0x04}, be16(5, 7)...),
		append([]byte{1, 0x06}, be16(3, 777)...),
		append(append([]byte{2, 0x10}, be16(20, 2)...), append([]byte{4}, be16(5, 6)...)...),
		append([]byte{3, 0x03}, be16(9999, 2)...), // exception 02
		append([]byte{7, 0x03}, be16(0, 1)...),    // silent unit: 0x0B
		{1, 0x2B, 0x0E, 0x01, 0x00},
		{2, 0x11},
	}
	dir := t.TempDir()
	for _, ext := range []string{"pcap", "txt"} {
		t.Run(ext, func(t *testing.T) {
			capPath := filepath.Join(dir, "l1."+ext)
			line1, err := serialport.NewPty()
			if err != nil {
				t.Fatal(err)
			}
			defer line1.Close()
			first := runSession(t, &sim.Line{Port: line1.Device, Units: sim.NewUnits([]byte{1, 2, 3}, 10000)}, line1, capPath, reqs)

			recs, err := capture.ReadFile(capPath)
			if err != nil {
				t.Fatal(err)
			}
			txs, sum := replay.Analyze(recs)
			if sum.Transactions != len(reqs) || sum.Unanswered != 1 || sum.Exceptions != 1 {
				t.Fatalf("capture holds %+v", sum)
			}
			// The capture, replayed as the device, drives a new gateway.
			line2, err := serialport.NewPty()
			if err != nil {
				t.Fatal(err)
			}
			defer line2.Close()
			second := runSession(t, &sim.Line{Port: line2.Device, Replay: replay.Answers(txs)}, line2, filepath.Join(dir, "again."+ext), reqs)
			for i := range reqs {
				if !bytes.Equal(first[i], second[i]) {
					t.Errorf("request %d: % X from the devices, % X from the replay", i, first[i], second[i])
				}
			}
			if ext == "pcap" {
				checkTshark(t, capPath, reqs)
			}
		})
	}
}

// checkTshark has Wireshark decode the gateway's pcap as Modbus RTU:
// every request and answer with the right unit and function code.
func checkTshark(t *testing.T, path string, reqs [][]byte) {
	need(t, "tshark")
	// Debian 12's tshark 4.0 spells the decode-as rule with one '='.
	out, err := exec.Command("tshark", "-r", path, "-d", "rtacser.data=mbrtu", "-T", "fields",
		"-e", "rtacser.eventtype", "-e", "mbrtu.unit_id", "-e", "modbus.func_code").Output()
	if err != nil {
		t.Fatalf("tshark: %v", err)
	}
	var want strings.Builder
	for _, r := range reqs {
		if len(r) == 2 {
			// A 4-byte frame (FC 17's request is the function code alone)
			// is too short for Wireshark's Modbus RTU dissector: it shows
			// the packet, undecoded.
			fmt.Fprintf(&want, "0x01\t\t\n")
		} else {
			fmt.Fprintf(&want, "0x01\t%d\t%d\n", r[0], r[1])
		}
		if r[0] != 7 { // the silent unit
			fmt.Fprintf(&want, "0x02\t%d\t%d\n", r[0], r[1])
		}
	}
	if string(out) != want.String() {
		t.Fatalf("tshark decoded:\n%s\nwant:\n%s", out, want.String())
	}
}
