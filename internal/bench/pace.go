//go:build linux

package bench

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/mcpgw/mcpgw/internal/loadtest"
)

// target is one row of the bench's targets table.
type target struct {
	name, got string
	ok        bool
}

// benchPace measures a line that keeps its pace: good answers under a fixed fault
// mix, live units beside a dead one, a good client among hostile ones,
// and writes queued behind 50 clients' reads. faulty's devices
// misbehave as its faults say; twin has a dead unit configured beside
// its live one.
func benchPace(ctx context.Context, rep *report, gw *gatewayProcess, addr string, paced, faulty, twin *benchLine, d func(time.Duration) time.Duration) ([]target, error) {
	var targets []target
	rep.printf("\n## A line that keeps its pace\n\n")

	// The fault mix against the same line without faults.
	window := d(10 * time.Second)
	run := func(l *benchLine, clients int, seed uint64) *loadtest.Result {
		return loadtest.Run(ctx, loadtest.Config{Addr: addr, Clients: clients, Duration: window, Units: l.units, Qty: 10, Timeout: 30 * time.Second, Seed: seed})
	}
	healthy := run(twin, 16, 21)
	before, err := faulty.simStats()
	if err != nil {
		return nil, err
	}
	faults := run(faulty, 16, 22)
	after, err := faulty.simStats()
	if err != nil {
		return nil, err
	}
	for what, r := range map[string]*loadtest.Result{"healthy line": healthy, "fault mix": faults} {
		if err := sane(what, r); err != nil {
			return nil, err
		}
	}
	// What the faults allow: each costs at least what it must. A dropped
	// answer costs the timeout, and the retry; a late one arrives LateBy
	// after its request; a corrupted one, a retry.
	f := faulty.faults
	per := healthy.Elapsed / time.Duration(max(1, healthy.OK))
	cost := per + time.Duration(f.Drop*float64(faulty.timeout+per)+f.Late*float64(f.LateBy)+f.Corrupt*float64(per))
	allowed := float64(window) / float64(cost)
	// Where the window went, by the faults the device drew (its random
	// draw, fixed by its seed, is not the rates): every frame it was sent
	// costs the healthy line's time per transaction, every dropped answer
	// the timeout, every late one its lateness. What is left is the
	// gateway's own waiting: guards, and owed answers that never came.
	frames, dropped, late, corrupted := after.Requests-before.Requests, after.Dropped-before.Dropped, after.LateAnswers-before.LateAnswers, after.Corrupted-before.Corrupted
	faultTime := time.Duration(frames)*per + time.Duration(dropped)*faulty.timeout + time.Duration(late)*f.LateBy
	rep.printf("16 checking clients for %s, reading 10 registers at 115200 (unpaced pty), timeout %s, one retry. The faulty line's device drops 1 answer in %.0f, corrupts 1 in %.0f and answers 1 in %.0f late, by %s. The faults alone allow about %.0f good answers in that time (each costs at least what it must: a drop the timeout and a retry, a late answer its lateness, a corruption a retry, on top of the healthy line's %s per transaction).\n\n",
		window, faulty.timeout, 1/f.Drop, 1/f.Corrupt, 1/f.Late, f.LateBy, allowed, us(per))
	rep.printf("The estimate counts each fault once per good answer; a device's faults fall on frames, retries too. This run's device was sent %d frames, dropped %d answers, answered %d late and corrupted %d: the frames, the timeouts and the late answers alone take %s of the %s, which leaves %s (%.0f %%) to the gateway's own waiting (its guards, and owed answers that never came).\n\n",
		frames, dropped, late, corrupted, faultTime.Round(10*time.Millisecond), faults.Elapsed.Round(10*time.Millisecond),
		(faults.Elapsed - faultTime).Round(10*time.Millisecond), 100*float64(faults.Elapsed-faultTime)/float64(faults.Elapsed))
	rep.printf("| line | good answers | per second | 0x0B | wrong | client errors |\n|---|---|---|---|---|---|\n")
	for _, row := range []struct {
		name string
		r    *loadtest.Result
	}{{"healthy", healthy}, {"fault mix", faults}} {
		rep.printf("| %s | %d | %.1f | %d | %d | %d |\n", row.name, row.r.OK, float64(row.r.OK)/row.r.Elapsed.Seconds(), row.r.Exceptions[0x0B], row.r.Wrong, errCount(row.r))
	}
	targets = append(targets, target{"fault mix: at least 90 % of the good answers the faults allow, none wrong",
		fmt.Sprintf("%d of %.0f (%.0f %%), %d wrong", faults.OK, allowed, 100*float64(faults.OK)/allowed, faults.Wrong),
		float64(faults.OK) >= 0.9*allowed && faults.Wrong == 0})

	// Live units beside a dead one polled as fast as a client can.
	window = d(15 * time.Second)
	alone := run(twin, 4, 23)
	var beside, deadRun *loadtest.Result
	var wg sync.WaitGroup
	wg.Go(func() { beside = run(twin, 4, 24) })
	wg.Go(func() {
		deadRun = loadtest.Run(ctx, loadtest.Config{Addr: addr, Clients: 1, Duration: window, Units: twin.dead[:1], Qty: 10, Timeout: 30 * time.Second, Seed: 25})
	})
	wg.Wait()
	if err := sane("live unit beside a dead one", beside); err != nil {
		return nil, err
	}
	cold := float64(beside.OK) / beside.Elapsed.Seconds() / (float64(alone.OK) / alone.Elapsed.Seconds())
	// Then, the unit offline, in turn: the machine's drift over seconds
	// (a fifth of the live unit's rate here) falls on both alike.
	const slices = 5
	slice := d(1500 * time.Millisecond)
	dead := 0
	aloneOn, besideOn := inTurn(ctx, slices, func(i int) *loadtest.Result {
		return loadtest.Run(ctx, loadtest.Config{Addr: addr, Clients: 4, Duration: slice, Units: twin.units, Qty: 10, Timeout: 30 * time.Second, Seed: uint64(30 + i)})
	}, func(dctx context.Context) {
		r := loadtest.Run(dctx, loadtest.Config{Addr: addr, Clients: 1, Units: twin.dead[:1], Qty: 10, Timeout: 30 * time.Second, Seed: 25})
		dead += r.Exceptions[0x0B]
	})
	for what, r := range map[string]*loadtest.Result{"live unit alone": alone, "live unit alone, in turn": &aloneOn, "live unit beside a dead one, in turn": &besideOn} {
		if err := sane(what, r); err != nil {
			return nil, err
		}
	}
	ratio := float64(besideOn.OK) / besideOn.Elapsed.Seconds() / (float64(aloneOn.OK) / aloneOn.Elapsed.Seconds())
	rep.printf("\n4 clients poll a live unit while one more client polls a unit configured on the same line whose device is dead, as fast as it is answered. From a cold start, for %s each, alone and then beside it (the dead unit's first failures, before it is marked offline, are in the figure); then, the unit offline, in turn, %d slices of %s each alone and beside it. The target is judged on the second: what the live units keep while the dead unit stays dead.\n\n", window, slices, slice)
	rep.printf("| live unit | answers per second | dead unit's answers (0x0B) |\n|---|---|---|\n")
	rep.printf("| alone | %.1f | |\n| beside the dead unit, from a cold start | %.1f (%.0f %%) | %d |\n", float64(alone.OK)/alone.Elapsed.Seconds(), float64(beside.OK)/beside.Elapsed.Seconds(), 100*cold, deadRun.Exceptions[0x0B])
	rep.printf("| alone, in turn | %.1f | |\n| beside the dead unit, offline, in turn | %.1f (%.0f %%) | %d |\n", float64(aloneOn.OK)/aloneOn.Elapsed.Seconds(), float64(besideOn.OK)/besideOn.Elapsed.Seconds(), 100*ratio, dead)
	targets = append(targets, target{"a dead unit polled: live units keep at least 80 % of their throughput", fmt.Sprintf("%.0f %% (from a cold start %.0f %%)", 100*ratio, 100*cold), ratio >= 0.8})

	t, err := benchHostile(ctx, rep, gw, addr, twin, d)
	if err != nil {
		return nil, err
	}
	targets = append(targets, t)

	// A write queued behind 50 clients' reads, on the paced 19200 line.
	window = d(8 * time.Second)
	wctx, cancel := context.WithTimeout(ctx, window)
	defer cancel()
	var writes []time.Duration
	var wfailed int
	wg.Go(func() { writes, wfailed = loadtest.Writes(wctx, addr, paced.units[0], 9900, 200*time.Millisecond) })
	reads := loadtest.Run(ctx, loadtest.Config{Addr: addr, Clients: 50, Duration: window, Units: paced.units, Qty: 10, MaxAddr: 9000, Timeout: 30 * time.Second, Seed: 29})
	wg.Wait()
	if err := sane("reads beside writes", reads); err != nil {
		return nil, err
	}
	rep.printf("\n50 clients read back to back on the paced 19200 line while one writes a register every 200 ms: writes go before plain reads in the line's queue.\n\n")
	rep.printf("| request | count | p50 | p99 | max | failed |\n|---|---|---|---|---|---|\n")
	rep.printf("| read | %d | %s | %s | %s | %d |\n", reads.OK, ms(reads.Percentile(50)), ms(reads.Percentile(99)), ms(reads.Percentile(100)), errCount(reads))
	rep.printf("| write | %d | %s | %s | %s | %d |\n", len(writes), ms(loadtest.Percentile(writes, 50)), ms(loadtest.Percentile(writes, 99)), ms(loadtest.Percentile(writes, 100)), wfailed)
	wire := (8 + 25) * paced.char()
	targets = append(targets, target{"a write behind 50 clients' reads waits at most for the transaction on the line and its own (p99 under 3 transactions)",
		fmt.Sprintf("%s (a transaction %s)", ms(loadtest.Percentile(writes, 99)), ms(wire+paced.gap)),
		len(writes) > 0 && wfailed == 0 && loadtest.Percentile(writes, 99) < 3*(wire+paced.gap)})
	return targets, nil
}

// benchHostile measures a good client among 20 hostile ones on twin's
// live unit. The hostile clients' dead unit (twin's second) has not been
// polled yet: for the first seconds the good client polls among them
// from that cold start, while the unit fails its way to offline (with
// the clients' requests to it waiting in the line's queue). Under their
// load the gateway's heap also grows to its working size then and for a
// while after (about 8 MiB more here, over some seconds of their load),
// which is not a leak: the memory is judged from then on.
// Then the good client polls in short slices, alone and among them in
// turn, so that the machine's drift over seconds (the good client alone
// moves by a fifth within minutes here) falls on both alike: the target's
// measure.
func benchHostile(ctx context.Context, rep *report, gw *gatewayProcess, addr string, twin *benchLine, d func(time.Duration) time.Duration) (target, error) {
	const slices = 5
	slice, warm := d(time.Second), d(5*time.Second)
	dead := twin.dead[len(twin.dead)-1]
	sent := 0
	attack := func(hctx context.Context) { sent += loadtest.Hostile(hctx, addr, 20, []byte{dead}, 27) }
	poll := func(d time.Duration, seed uint64) *loadtest.Result {
		return loadtest.Run(ctx, loadtest.Config{Addr: addr, Clients: 1, Duration: d, Units: twin.units, Qty: 10, Timeout: 30 * time.Second, Seed: seed})
	}
	rss0 := gw.rss()
	wctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { attack(wctx) })
	cold := poll(warm, 25)
	time.Sleep(warm / 2) // the hostile clients alone: the heap's warm-up goes on
	cancel()
	wg.Wait()
	rssWarm := gw.rss()
	alone, amid := inTurn(ctx, slices, func(i int) *loadtest.Result { return poll(slice, uint64(26+i)) }, attack)
	rss1 := gw.rss()
	for what, r := range map[string]*loadtest.Result{"good client alone": &alone, "good client among hostile ones from a cold start": cold} {
		if err := sane(what, r); err != nil {
			return target{}, err
		}
	}
	if amid.Transactions == 0 {
		return target{}, fmt.Errorf("good client among hostile ones: no answers; errors %v", amid.Errors)
	}
	rate := func(r *loadtest.Result) float64 { return float64(r.OK) / r.Elapsed.Seconds() }
	ratio, coldRatio := rate(&amid)/rate(&alone), rate(cold)/rate(&alone)
	rep.printf("\nOne good client polls a live unit among 20 clients sending what no device can use (function codes 0 and 128-255, wrong lengths, 2000 registers, requests at random addresses to a dead unit, broken headers): first for %s from a cold start (the dead unit not yet offline: its first failures, with the hostile clients' requests to it waiting in the queue, are in the figure); then, after %s more of the hostile clients alone (the gateway's heap grows to its working size under their load: the memory is judged from then on), alone and among them in turn, %d slices of %s each, the target's measure. They sent %d requests.\n\n", warm, warm/2, slices, slice, sent)
	rep.printf("| good client | answers per second | failed | wrong |\n|---|---|---|---|\n")
	for _, row := range []struct {
		name string
		r    *loadtest.Result
	}{{"among 20 hostile clients, from a cold start", cold}, {"alone, in turn", &alone}, {"among 20 hostile clients, in turn", &amid}} {
		rep.printf("| %s | %.1f | %d | %d |\n", row.name, rate(row.r), errCount(row.r)+len(row.r.ExcLatencies), row.r.Wrong)
	}
	rep.printf("\nGateway RSS: %.1f MiB before, %.1f MiB after the warm-up, %.1f MiB at the end.\n", mib(rss0), mib(rssWarm), mib(rss1))
	failed := errCount(&amid) + len(amid.ExcLatencies) + amid.Wrong + errCount(cold) + len(cold.ExcLatencies) + cold.Wrong
	return target{"20 hostile clients: a good client keeps at least 80 % of its answers, none failed or wrong, memory flat",
		fmt.Sprintf("%.0f %% (from a cold start %.0f %%), %d failed or wrong, RSS %+.1f MiB after the warm-up", 100*ratio, 100*coldRatio, failed, mib(rss1-rssWarm)),
		ratio >= 0.8 && failed == 0 && rss1-rssWarm < 2*1024}, nil
}

// mib converts kB to MiB.
func mib(kb int) float64 { return float64(kb) / 1024 }

// inTurn runs poll n times, alone and while disturb runs, in turn
// (disturb gets a context that ends with poll's run), and sums up each.
// Slices in turn see the same moments of the machine, whose speed drifts
// over seconds.
func inTurn(ctx context.Context, n int, poll func(i int) *loadtest.Result, disturb func(ctx context.Context)) (alone, beside loadtest.Result) {
	for i := range n {
		alone.Add(poll(i))
		ctx, cancel := context.WithCancel(ctx)
		var wg sync.WaitGroup
		wg.Go(func() { disturb(ctx) })
		time.Sleep(50 * time.Millisecond) // the disturbance under way
		beside.Add(poll(i))
		cancel()
		wg.Wait()
	}
	return alone, beside
}
