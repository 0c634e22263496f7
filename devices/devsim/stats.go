package devsim

import "sync/atomic"

// Stats counts what a simulator saw, for tests and benchmarks.
type Stats struct {
	// OtherUnit counts requests to unit ids not simulated (RTU: ignored,
	// as on a shared bus; TCP: answered with exception 0x0B).
	OtherUnit uint64
	// BadFrames counts RTU input dropped as garbage (bad CRC, incomplete
	// frame) and TCP connections closed for a malformed MBAP header.
	BadFrames uint64
	// Broadcasts counts RTU requests to unit 0 (executed, never answered).
	Broadcasts uint64
	Units      map[uint8]UnitStats
}

// UnitStats counts one unit's requests.
type UnitStats struct {
	Requests   uint64 // requests addressed to the unit
	Responses  uint64 // answers sent, exceptions included
	Exceptions uint64 // exception answers
	Dropped    uint64 // requests left unanswered by FaultSilent
}

type counters struct {
	otherUnit, badFrames, broadcasts atomic.Uint64
}

type unitCounters struct {
	requests, responses, exceptions, dropped atomic.Uint64
}

// Stats returns the counters so far. Safe while running.
func (m *Modbus) Stats() Stats {
	s := Stats{
		OtherUnit:  m.counters.otherUnit.Load(),
		BadFrames:  m.counters.badFrames.Load(),
		Broadcasts: m.counters.broadcasts.Load(),
		Units:      map[uint8]UnitStats{},
	}
	for _, id := range m.ids {
		c := &m.units[id].stats
		s.Units[id] = UnitStats{
			Requests:   c.requests.Load(),
			Responses:  c.responses.Load(),
			Exceptions: c.exceptions.Load(),
			Dropped:    c.dropped.Load(),
		}
	}
	return s
}
