package modbus

import (
	"math/bits"
	"sync/atomic"
	"time"
)

// Scheduling. Every link (bus) polls on a fixed grid, start + offset +
// k×interval. The links are spread over the interval in phases at least
// phaseSpacing apart, at most maxPhases of them (never more phases than
// links); the links of a phase, consecutive in config order, start together. Spreading keeps a thousand
// PLCs from all answering, being encoded and reaching the broker in the
// same millisecond: the last batch of such a burst waits for all the
// others (from ts to a subscriber, p99 25–45 ms for 50 PLCs at once, 5–7 ms
// in phases of 10, on the 50 × 100 at 100 ms load). Grouping lets the links
// of a phase share the cost of waking the process up (threads and context
// switches for the polls, the answers, the publication and its
// acknowledgement, about 1 ms of CPU a phase): the same load costs 1.2–1.4
// CPU-s per million readings all at once, 2.0 in phases of 10 and 4.3 one
// link a phase (bench.BenchmarkModbusTCP50x100).
//
// A cycle that ends past the next slot is an overrun: the next cycle starts
// at once — on a serial line after the 3.5-character silence the RTU
// transport keeps — and serves the latest slot that passed; slots that
// passed entirely during the cycle are skipped. A link too slow for its
// interval thus polls back to back, every device in turn, and never queues
// cycles. Readings carry the time of their actual read.

// phaseSpacing is the least time between two phases: the collector wakes
// up for a new group of links at most 50 times a second.
const phaseSpacing = 20 * time.Millisecond

// maxPhases bounds the phases of one interval. Past it, links join
// larger phases rather than waking the process more often: 1,000 PLCs at
// 1 s cost 12.8 % of a core in 50 phases of 20, 10.4 % in 20 and 9.6 % in
// 10, for a latency from ts to subscriber of p99 4.3, 8.3 and 15 ms
// (bench.BenchmarkModbusTCP1000x100, one quiet run each); 5,000 PLCs at 1 s
// 44 → 39 %, p99 14 → 49 ms. Shorter intervals are bounded by
// phaseSpacing first (50 PLCs at 100 ms: 5 phases of 10, unchanged).
const maxPhases = 10

// phaseOffset is link i of n's start after the first link's.
func phaseOffset(i, n int, interval time.Duration) time.Duration {
	phases := min(n, int(interval/phaseSpacing), maxPhases)
	if phases <= 1 {
		return 0
	}
	return interval * time.Duration(i*phases/n) / time.Duration(phases)
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
