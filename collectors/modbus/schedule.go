package modbus

import (
	"math/bits"
	"sync/atomic"
	"time"
)

// Scheduling. Every link (bus) polls on a fixed grid, start + offset +
// k×interval. Links are started in groups of linksPerPhase, in config order,
// and the groups are spread evenly over one interval, so a thousand PLCs do
// not all answer, get encoded and reach the broker in the same millisecond
// (the last batch of such a burst waits for all the others), while the
// links of one group still share the process's wake-ups: a batch polled on
// its own costs the collector about twice the CPU of one polled with nine
// others (thread wake-ups and context switches for the poll, the answer,
// the publication and its acknowledgement), measured by
// bench.BenchmarkModbusTCP50x100. A cycle that ends past the next slot is an overrun: the next cycle starts
// at once — on a serial line after the 3.5-character silence the RTU
// transport keeps — and serves the latest slot that passed; slots that
// passed entirely during the cycle are skipped. A link too slow for its
// interval thus polls back to back, every device in turn, and never queues
// cycles. Readings carry the time of their actual read.

// linksPerPhase is how many links start their cycles together.
const linksPerPhase = 10

// phaseOffset is link i of n's start after the first link's: group i /
// linksPerPhase of ⌈n / linksPerPhase⌉ groups spread over interval.
func phaseOffset(i, n int, interval time.Duration) time.Duration {
	groups := (n + linksPerPhase - 1) / linksPerPhase
	return interval * time.Duration(i/linksPerPhase) / time.Duration(max(groups, 1))
}

// PollStats are the poller's schedule figures since start, over all links.
type PollStats struct {
	// Cycles counts link cycles run (each polls every device due on it).
	Cycles uint64
	// Overruns counts cycles that ended after the next cycle's slot; the
	// next cycle then started right away.
	Overruns uint64
	// Skipped counts slots no cycle was run for because a cycle overran
	// past them.
	Skipped uint64
	// LateP50, LateP99 and LateMax are the lateness of cycle starts
	// against their slot (≤ 12.5 % above the true value: a histogram).
	LateP50, LateP99, LateMax time.Duration
}

// schedStats counts for every link of a poller; safe for concurrent use.
type schedStats struct {
	cycles, overruns, skipped atomic.Uint64
	late                      histogram
}

func (s *schedStats) snapshot() PollStats {
	return PollStats{Cycles: s.cycles.Load(), Overruns: s.overruns.Load(), Skipped: s.skipped.Load(),
		LateP50: s.late.quantile(0.5), LateP99: s.late.quantile(0.99), LateMax: s.late.quantile(1)}
}

// PollStats returns the schedule figures. It is safe to call while Run is
// running.
func (p *Poller) PollStats() PollStats { return p.sched.snapshot() }

// histogram counts durations in microsecond buckets, 8 per power of two
// (values below 8 µs exactly), lock-free.
type histogram struct {
	counts [histBuckets]atomic.Uint64
}

const (
	histSubBits = 3
	histBuckets = (64 - histSubBits + 1) << histSubBits
)

func histBucket(us uint64) int {
	if us < 1<<histSubBits {
		return int(us)
	}
	shift := bits.Len64(us) - histSubBits - 1
	return (shift+1)<<histSubBits | int(us>>shift&(1<<histSubBits-1))
}

// histUpper is the first value above bucket i.
func histUpper(i int) uint64 {
	if i < 1<<histSubBits {
		return uint64(i) + 1
	}
	shift := i>>histSubBits - 1
	return (1<<histSubBits | uint64(i&(1<<histSubBits-1)) + 1) << shift
}

func (h *histogram) add(d time.Duration) {
	h.counts[histBucket(uint64(max(d, 0)/time.Microsecond))].Add(1)
}

// quantile is the upper bound of the bucket holding quantile q (0 when
// nothing was counted).
func (h *histogram) quantile(q float64) time.Duration {
	var total uint64
	for i := range h.counts {
		total += h.counts[i].Load()
	}
	if total == 0 {
		return 0
	}
	rank := uint64(q*float64(total) + 0.5)
	rank = min(max(rank, 1), total)
	var seen uint64
	for i := range h.counts {
		if seen += h.counts[i].Load(); seen >= rank {
			return time.Duration(histUpper(i)) * time.Microsecond
		}
	}
	return time.Duration(histUpper(histBuckets-1)) * time.Microsecond
}
