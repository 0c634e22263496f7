package devsim

import (
	"fmt"
	"sort"
	"sync"
	"time"

	"fieldgate/devices/profiles"
)

// Table numbers index unit.tables.
const (
	tCoil = iota
	tDiscrete
	tHolding
	tInput
)

var tableNames = [4]string{"coil", "discrete_input", "holding_register", "input_register"}

func tableIndex(name string) int {
	for i, n := range tableNames {
		if n == name {
			return i
		}
	}
	return -1
}

type entry struct {
	tag        *profiles.Tag
	start, end int // [start, end) addresses
}

type span struct{ start, end int }

// table is one Modbus table of a unit: its tags sorted by address and the
// merged address ranges they cover.
type table struct {
	words   []entry // non-bit tags; never overlapping (profiles.Validate)
	bits    []entry // bit tags of registers, sorted by address
	covered []span
	lo, hi  int // extent [lo, hi) of all tags; lo == hi when empty
}

// unit is one simulated slave: a profile plus the values written to it.
type unit struct {
	id      uint8
	profile *profiles.Profile
	tables  [4]table
	readGap bool
	maxRegs int // registers per read

	mu      sync.Mutex
	written [4]map[int]uint16 // table -> address -> written register (coils: 0/1)
	fault   Fault
	count   uint64 // responses due, for Fault.Every

	stats unitCounters
}

func newUnit(id uint8, p *profiles.Profile, readGaps bool) (*unit, error) {
	if err := p.Validate(); err != nil {
		return nil, fmt.Errorf("unit %d: profile %q: %w", id, p.Name, err)
	}
	u := &unit{id: id, profile: p, readGap: readGaps, maxRegs: maxReadRegisters}
	for i := range u.written {
		u.written[i] = map[int]uint16{}
	}
	var spans [4][]span
	for i := range p.Tags {
		t := &p.Tags[i]
		ti := tableIndex(t.Table)
		e := entry{tag: t, start: t.Address, end: t.Address + t.Width()}
		tb := &u.tables[ti]
		if t.Bit != nil {
			tb.bits = append(tb.bits, e)
		} else {
			tb.words = append(tb.words, e)
		}
		spans[ti] = append(spans[ti], span{e.start, e.end})
	}
	for ti := range u.tables {
		tb := &u.tables[ti]
		sort.Slice(tb.words, func(i, j int) bool { return tb.words[i].start < tb.words[j].start })
		sort.SliceStable(tb.bits, func(i, j int) bool { return tb.bits[i].start < tb.bits[j].start })
		s := spans[ti]
		sort.Slice(s, func(i, j int) bool { return s[i].start < s[j].start })
		for _, sp := range s {
			if n := len(tb.covered); n > 0 && sp.start <= tb.covered[n-1].end {
				tb.covered[n-1].end = max(tb.covered[n-1].end, sp.end)
				continue
			}
			tb.covered = append(tb.covered, sp)
		}
		if len(tb.covered) > 0 {
			tb.lo, tb.hi = tb.covered[0].start, tb.covered[len(tb.covered)-1].end
		}
	}
	return u, nil
}

// mapped reports whether every address in [addr, addr+n) may be accessed:
// covered by a tag, or (with ReadGaps) within the table's extent.
func (u *unit) mapped(ti, addr, n int) bool {
	tb := &u.tables[ti]
	end := addr + n
	if u.readGap {
		return tb.lo < tb.hi && addr >= tb.lo && end <= tb.hi
	}
	i := sort.Search(len(tb.covered), func(i int) bool { return tb.covered[i].end > addr })
	return i < len(tb.covered) && tb.covered[i].start <= addr && tb.covered[i].end >= end
}

// registers fills dst with the register image of table ti from address addr
// at time at: tag values, then bit tags, then written values on top.
// Unmapped registers read 0.
func (u *unit) registers(dst []uint16, ti, addr int, at time.Time) {
	clear(dst)
	tb := &u.tables[ti]
	end := addr + len(dst)
	var scratch [8]uint16
	i := sort.Search(len(tb.words), func(i int) bool { return tb.words[i].end > addr })
	for ; i < len(tb.words) && tb.words[i].start < end; i++ {
		e := tb.words[i]
		w := scratch[:]
		if e.end-e.start > len(w) {
			w = make([]uint16, e.end-e.start)
		}
		w = w[:e.end-e.start]
		encodeWords(w, e.tag, e.tag.SimValue(at))
		for a := max(e.start, addr); a < min(e.end, end); a++ {
			dst[a-addr] = w[a-e.start]
		}
	}
	j := sort.Search(len(tb.bits), func(j int) bool { return tb.bits[j].start >= addr })
	for ; j < len(tb.bits) && tb.bits[j].start < end; j++ {
		e := tb.bits[j]
		mask := uint16(1) << *e.tag.Bit
		if v, _ := e.tag.SimValue(at).(bool); v {
			dst[e.start-addr] |= mask
		} else {
			dst[e.start-addr] &^= mask
		}
	}
	u.overlayWritten(dst, ti, addr)
}

// bits fills dst with coils or discrete inputs of table ti from addr at time at.
func (u *unit) bits(dst []bool, ti, addr int, at time.Time) {
	clear(dst)
	tb := &u.tables[ti]
	end := addr + len(dst)
	i := sort.Search(len(tb.words), func(i int) bool { return tb.words[i].end > addr })
	for ; i < len(tb.words) && tb.words[i].start < end; i++ {
		e := tb.words[i]
		v, _ := e.tag.SimValue(at).(bool)
		dst[e.start-addr] = v
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.written[ti]) == 0 {
		return
	}
	for a := addr; a < end; a++ {
		if w, ok := u.written[ti][a]; ok {
			dst[a-addr] = w != 0
		}
	}
}

func (u *unit) overlayWritten(dst []uint16, ti, addr int) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.written[ti]) == 0 {
		return
	}
	for a := addr; a < addr+len(dst); a++ {
		if w, ok := u.written[ti][a]; ok {
			dst[a-addr] = w
		}
	}
}

// write stores values written by a master; they override the simulation of
// those addresses from then on.
func (u *unit) write(ti, addr int, vals []uint16) {
	u.mu.Lock()
	defer u.mu.Unlock()
	for i, v := range vals {
		u.written[ti][addr+i] = v
	}
}

// expected decodes every tag from the unit's image at time at.
func (u *unit) expected(at time.Time) map[string]any {
	out := make(map[string]any, len(u.profile.Tags))
	for i := range u.profile.Tags {
		t := &u.profile.Tags[i]
		ti := tableIndex(t.Table)
		if profiles.IsBitTable(t.Table) {
			var b [1]bool
			u.bits(b[:], ti, t.Address, at)
			out[t.Name] = b[0]
			continue
		}
		w := make([]uint16, t.Width())
		u.registers(w, ti, t.Address, at)
		out[t.Name] = decodeWords(t, w)
	}
	return out
}
