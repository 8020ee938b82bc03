package rtu

import "time"

// silence is a line's budget for the time it loses to units that are not
// known to answer: a request marked Request.Unknown (the first request to
// a unit that has never answered, or a probe of an offline one) may hold
// the line for its timeout and the guard after it, and hear nothing.
//
// The first request to a unit never heard goes to the line free while
// no other client is using it: no request to a unit known to answer is
// queued or on the line, and no other client has had one for
// activeWindow (a client polling back to back has its next request on
// the way). Silence then costs nobody, which is how a commissioning scan
// over units 1-247 finds every device that is there. A probe of an
// offline unit goes free only while no client at all is using the line
// (a SCADA polling present and absent units alike would otherwise spend
// its own time probing), and free probes take at most freeProbeShare of
// the line: one client asking for many offline units (a commissioning
// scan done again) is not held back by their probes, while one offline
// unit polled on a quiet line is probed every probe interval.
//
// Otherwise it takes the budget: it goes only if the last silence is far
// enough behind (after a silence of d, the next starts no sooner than
// d/share later: silences spread evenly), and the silences of the last
// minute leave room for one more within share of it. An answered one
// costs nothing, so a gateway started in front of many present devices
// brings them all online at the line's pace. The budget is asked twice:
// when the request is queued (without room it is refused at once), and
// again when its turn comes, since a silence may have come meanwhile (a
// request turned back then never goes out). A refused request is
// OverBudget, 0x0B at once: so the clients of units that answer never
// wait behind more absence than the budget allows, however many units are
// absent and however often their clients ask.
type silence struct {
	share float64   // of the line's time; 0: only free ones
	next  time.Time // no silence starts before this, but a free one
	// freeNext: no free probe starts before this.
	freeNext time.Time
	spent    []spend   // the budgeted silences of the last minute
	known    int       // requests to units known to answer, queued or on the line
	last     [2]active // the two latest flows with such a request, distinct
}

type spend struct {
	at time.Time
	d  time.Duration
}

type active struct {
	flow uint64
	at   time.Time
}

const (
	// silenceWindow is the span over which silences stay within share.
	silenceWindow = time.Minute
	// activeWindow is how long after its last request to a unit that
	// answers a client still counts as using the line.
	activeWindow = time.Second
	// freeProbeShare is the share of a quiet line free probes may take.
	freeProbeShare = 0.25
)

// mayGo decides on a request of flow to a unit not known to answer (a
// probe of an offline one if probe), now: free if no one else uses the
// line, else budgeted, if the budget has room for est more of silence.
func (s *silence) mayGo(flow uint64, probe bool, now time.Time, est time.Duration) (ok, budgeted bool) {
	if s.known == 0 && !s.active(flow, probe, now) && (!probe || !now.Before(s.freeNext)) {
		return true, false
	}
	if s.share <= 0 || now.Before(s.next) {
		return false, false
	}
	from, sum := now.Add(-silenceWindow), est
	k := 0
	for _, sp := range s.spent {
		if sp.at.After(from) {
			s.spent[k] = sp
			k++
			sum += sp.d
		}
	}
	s.spent = s.spent[:k]
	if float64(sum) > s.share*float64(silenceWindow) {
		return false, false
	}
	return true, true
}

// active reports whether a flow other than flow (any flow, with all)
// has had a request to a unit known to answer within activeWindow of
// now.
func (s *silence) active(flow uint64, all bool, now time.Time) bool {
	for _, a := range s.last {
		if !a.at.IsZero() && (all || a.flow != flow) && now.Sub(a.at) < activeWindow {
			return true
		}
	}
	return false
}

// touch records that flow had a request to a unit known to answer at t.
func (s *silence) touch(flow uint64, t time.Time) {
	if s.last[0].flow != flow || s.last[0].at.IsZero() {
		s.last[1] = s.last[0]
	}
	s.last[0] = active{flow, t}
}

// started books a request to a unit known to answer, queued at now.
func (s *silence) started(flow uint64, now time.Time) {
	s.known++
	s.touch(flow, now)
}

// done books a request that has left the queue: one to a known unit is
// no longer pending; an unknown one that went out and heard nothing (a
// timeout) was a silence, from start to end and the guard after: the
// next may start d/share after it, and a budgeted one is spent.
func (s *silence) done(r *Request, start, end time.Time, guard time.Duration) {
	if !r.Unknown {
		s.known--
		s.touch(r.Flow, end)
		return
	}
	if r.Outcome != Timeout || r.Attempts == 0 {
		return
	}
	d := end.Sub(start) + guard
	if r.budgeted {
		s.spent = append(s.spent, spend{start, d})
	} else if r.Probe {
		s.freeNext = start.Add(time.Duration(float64(d) / freeProbeShare))
	}
	if s.share > 0 {
		if next := start.Add(time.Duration(float64(d) / s.share)); next.After(s.next) {
			s.next = next
		}
	}
}
