package publish

import (
	"sync/atomic"
	"time"
)

// PollStatus is the "poll" object of a polling collector's status: its
// schedule since start (the Modbus collector's PollStats). Overruns are
// cycles that ran past the next one's start (which then began at once);
// skipped are slots that got no cycle; the lateness is that of cycle starts
// against their schedule.
type PollStatus struct {
	Cycles    uint64  `json:"cycles"`
	Overruns  uint64  `json:"overruns"`
	Skipped   uint64  `json:"skipped"`
	LateP50Ms float64 `json:"late_p50_ms"`
	LateP99Ms float64 `json:"late_p99_ms"`
	LateMaxMs float64 `json:"late_max_ms"`
}

// pollCountsEvery bounds how often new overrun counts alone republish the
// retained status (the status file has them every second).
var pollCountsEvery = 10 * time.Second

// ReportPolling makes every status carry poll(), the engine's schedule
// figures; the retained status is republished when the overrun count moved,
// at most every pollCountsEvery. It may be called at any time.
func (p *Publisher) ReportPolling(poll func() PollStatus) { p.poll.Store(&poll) }

// pollStatus is the engine's figures, nil without ReportPolling.
func (p *Publisher) pollStatus() *PollStatus {
	f := p.poll.Load()
	if f == nil {
		return nil
	}
	st := (*f)()
	return &st
}

// pollTracker remembers the overruns the retained status last showed.
type pollTracker struct {
	shown atomic.Uint64
	at    time.Time
}

// due reports whether overruns differ from what was shown long enough ago.
func (t *pollTracker) due(st *PollStatus, now time.Time) bool {
	return st != nil && st.Overruns != t.shown.Load() && now.Sub(t.at) >= pollCountsEvery
}

func (t *pollTracker) shownAt(st *PollStatus, now time.Time) {
	if st != nil {
		t.shown.Store(st.Overruns)
		t.at = now
	}
}
