package gateway

import (
	"context"
	"time"

	"github.com/mcpgw/mcpgw/pkg/chain/offline"
	"github.com/mcpgw/mcpgw/pkg/request"
	"github.com/mcpgw/mcpgw/pkg/trace"
)

// Discovery: at start, and after a reload, each configured unit that has
// not been heard yet is asked once, in the background, so that absent
// units are known before clients ask for them. A unit is asked with a
// read of one holding register at address 0: any answer, an exception
// too, shows the device is there. The requests enter the chain at the
// offline rule, which learns from them as from any client's: they are
// the first requests to units never heard (rtu.Request.Unknown), free
// while no client uses the line and within its silence budget
// otherwise. One line's units are asked one at a time; a request the
// budget has no room for is asked again later.

// discoverRetry is how long discovery waits before asking a unit again
// that the silence budget had no room for.
const discoverRetry = 500 * time.Millisecond

// discoverClient is discovery's name in the logs and its own flow on the
// line.
const discoverClient = "discover"

var discoverPDU = []byte{0x03, 0x00, 0x00, 0x00, 0x01}

// startDiscovery (re)starts discovery on every line that has it on, for
// its units not heard yet; a discovery still running from before is
// stopped first. s.reloadMu is held.
func (s *Service) startDiscovery() {
	if s.ctx == nil {
		return
	}
	if s.stopDiscovery != nil {
		s.stopDiscovery()
	}
	ctx, cancel := context.WithCancel(s.ctx)
	s.stopDiscovery = cancel
	for _, l := range s.current() {
		b := &l.conf
		if !*b.Discover || *b.OfflineAfter <= 0 || b.Bound {
			continue
		}
		units := append([]byte(nil), b.UnitIDs...)
		s.wg.Go(func() { s.discover(ctx, b.Name, units) })
	}
}

// discover asks each of units not heard yet, once, until every one has
// answered or been found absent, or ctx ends.
func (s *Service) discover(ctx context.Context, line string, units []byte) {
	var asked, found, absent int
	start := time.Now()
	for _, u := range units {
		for ctx.Err() == nil {
			if st, _ := s.Offline.State(u); st != offline.Unseen {
				break
			}
			tr := &request.Request{Unit: u, PDU: discoverPDU, Client: discoverClient, Trace: trace.Next()}
			s.Offline.ServeModbus(ctx, tr, nil)
			if tr.Outcome == request.OverBudget || tr.Outcome == request.Expired {
				sleep(ctx, discoverRetry)
				continue
			}
			asked++
			switch st, _ := s.Offline.State(u); st {
			case offline.Online:
				found++
			case offline.Offline:
				absent++
			}
			break
		}
	}
	if asked > 0 && ctx.Err() == nil {
		s.log.Info("discovery done", "line", line, "asked", asked, "answered", found, "absent", absent,
			"took", time.Since(start).Round(time.Millisecond))
	}
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
