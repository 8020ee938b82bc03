//go:build linux

package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"google.golang.org/protobuf/proto"

	"github.com/mcpgw/mcpgw/internal/loadtest"
	"github.com/mcpgw/mcpgw/pkg/north/sparkplug/sproto"
)

// benchSparkplug measures the Sparkplug edge node: a gateway polling many
// blocks of clock devices (every value changes at every read) on
// unpaced lines, publishing to Mosquitto, and a subscriber counting the
// values and how old each is when it arrives. Skipped without mosquitto.
func benchSparkplug(ctx context.Context, rep *report, d func(time.Duration) time.Duration, stderr io.Writer) error {
	rep.printf("\n## Sparkplug B: values published to an MQTT broker\n\n")
	if _, err := exec.LookPath("mosquitto"); err != nil {
		rep.printf("Skipped: mosquitto is not installed (apt-get install mosquitto).\n")
		return nil
	}
	port, err := freeAddr()
	if err != nil {
		return err
	}
	_, p, _ := strings.Cut(port, ":")
	dir, err := os.MkdirTemp("", "mcpgw-bench-mqtt")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	conf := filepath.Join(dir, "mosquitto.conf")
	if err := os.WriteFile(conf, []byte("listener "+p+" 127.0.0.1\nallow_anonymous true\npersistence false\n"), 0o644); err != nil {
		return err
	}
	broker := exec.CommandContext(ctx, "mosquitto", "-c", conf)
	if err := broker.Start(); err != nil {
		return err
	}
	defer func() { broker.Process.Kill(); broker.Wait() }()
	if err := waitListening(port, 5*time.Second); err != nil {
		return fmt.Errorf("mosquitto: %w", err)
	}

	// Four lines of ten clock devices, each polled for 10 registers.
	const lines, units, values = 4, 10, 10
	var paths []string
	var ids [][]byte
	for i := range lines {
		var us []byte
		for u := range units {
			us = append(us, byte(100+10*i+u))
		}
		l := &benchLine{name: fmt.Sprintf("mqtt%d", i), baud: 115200, units: us, clock: true, noTwin: true}
		if err := l.open(ctx); err != nil {
			return err
		}
		defer l.close()
		paths, ids = append(paths, l.gwPath), append(ids, us)
	}
	config := func(every time.Duration) string {
		var buses strings.Builder
		fmt.Fprintf(&buses, "[mqtt]\nbroker = \"tcp://%s\"\ngroup = \"bench\"\nnode = \"gw\"\nbuffer = 100000\n", port)
		for i := range lines {
			fmt.Fprintf(&buses, "[[bus]]\nname = \"mqtt%d\"\nport = %q\nbaud = 115200\nparity = \"N\"\nstop_bits = 2\nunits = [%s]\n", i, paths[i], unitList(ids[i]))
			for _, u := range ids[i] {
				fmt.Fprintf(&buses, "[[bus.poll]]\nunit = %d\nfunction = 3\naddress = 0\ncount = %d\ninterval = %q\n", u, values, every)
				for r := range values {
					fmt.Fprintf(&buses, "[[bus.poll.value]]\nname = \"r%d\"\noffset = %d\ntype = \"uint16\"\n", r, r)
				}
			}
		}
		return buses.String()
	}

	// The subscriber: each value's age when it arrives, from the clock the
	// device wrote into the register as it was read.
	var (
		mu       sync.Mutex
		counting bool
		msgs     int
		vals     int
		wrong    int
		ages     []time.Duration
		regOf    = make(map[uint64]int) // alias → register, from the births
	)
	opts := mqtt.NewClientOptions().AddBroker("tcp://" + port).SetClientID("mcpgw-bench-host").SetCleanSession(true)
	sub := mqtt.NewClient(opts)
	if t := sub.Connect(); !t.WaitTimeout(5*time.Second) || t.Error() != nil {
		return fmt.Errorf("subscriber: %v", t.Error())
	}
	defer sub.Disconnect(0)
	handle := func(_ mqtt.Client, m mqtt.Message) {
		now := time.Now()
		var pl sproto.Payload
		if proto.Unmarshal(m.Payload(), &pl) != nil {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		birth := strings.Contains(m.Topic(), "/DBIRTH/")
		for _, mt := range pl.Metrics {
			if birth {
				r, _ := strconv.Atoi(strings.TrimPrefix(mt.GetName(), "r"))
				regOf[mt.GetAlias()] = r
				continue
			}
			if !counting || !strings.Contains(m.Topic(), "/DDATA/") {
				continue
			}
			age, ok := clockAge(regOf[mt.GetAlias()], uint16(mt.GetIntValue()), now)
			if !ok {
				wrong++
				continue
			}
			vals++
			ages = append(ages, age)
		}
		if counting && !birth {
			msgs++
		}
	}
	if t := sub.Subscribe("spBv1.0/bench/#", 0, handle); !t.WaitTimeout(5*time.Second) || t.Error() != nil {
		return fmt.Errorf("subscriber: %v", t.Error())
	}
	rep.printf("%d lines at 115200 (unpaced), %d clock devices on each, each polled for %d holding registers, each register a Sparkplug value: %d values a reading. The devices write their clock into every register as it is read, so every value changes at every poll and is published, and a subscriber (paho, in the bench's process) knows how old each is when it arrives, to the millisecond: the latency from the register taking its value on the device to a subscriber of the broker seeing it. CPU is per second of the window, of one CPU.\n\n",
		lines, units, values, lines*units*values)
	rep.printf("| poll interval | values per second | DDATA messages per second | gateway CPU | broker CPU | latency p50 | p99 | max | wrong |\n|---|---|---|---|---|---|---|---|---|\n")
	for _, every := range []time.Duration{100 * time.Millisecond, 20 * time.Millisecond} {
		gw, _, err := startGatewayProcess(config(every), 100, "warn", stderr)
		if err != nil {
			return err
		}
		time.Sleep(2 * time.Second) // births
		window := d(10 * time.Second)
		brokerCPU0, gwCPU0 := cpuOf(broker.Process.Pid), gw.cpu()
		mu.Lock()
		counting, msgs, vals, wrong, ages = true, 0, 0, 0, ages[:0]
		mu.Unlock()
		start := time.Now()
		time.Sleep(window)
		mu.Lock()
		counting = false
		elapsed := time.Since(start)
		m, v, w, lat := msgs, vals, wrong, append([]time.Duration(nil), ages...)
		mu.Unlock()
		brokerCPU, gwCPU := cpuOf(broker.Process.Pid)-brokerCPU0, gw.cpu()-gwCPU0
		gw.stop()
		rep.printf("| %s | %.0f | %.0f | %.0f %% | %.0f %% | %s | %s | %s | %d |\n", every, float64(v)/elapsed.Seconds(), float64(m)/elapsed.Seconds(),
			100*gwCPU.Seconds()/elapsed.Seconds(), 100*brokerCPU.Seconds()/elapsed.Seconds(),
			ms(loadtest.Percentile(lat, 50)), ms(loadtest.Percentile(lat, 99)), ms(loadtest.Percentile(lat, 100)), w)
		if v == 0 {
			return fmt.Errorf("sparkplug: no values arrived at the subscriber")
		}
	}
	return nil
}
