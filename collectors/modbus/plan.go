package modbus

import (
	"fmt"
	"slices"
	"sort"
)

// Request is one Modbus read: the function follows from Table; Address and
// Quantity count registers, or bits for coils and discrete inputs. Tags are
// indexes into the device's Tags, in ascending address order, of the tags the
// response carries.
type Request struct {
	Table    Table
	Address  uint16
	Quantity uint16
	Tags     []int
}

// String is the request as it appears in logs: "holding_register 100+10".
func (r Request) String() string {
	return fmt.Sprintf("%s %d+%d", r.Table, r.Address, r.Quantity)
}

// Plan is a device's request plan: its tags coalesced, table by table, into the
// fewest reads within the protocol limits (125 registers, 2000 bits) and the
// device's MaxRegistersPerRequest, MaxBitsPerRequest and MaxGap. It learns from
// rejections (Reject) and keeps the working plan. A Plan is used by one poller
// at a time; it is not safe for concurrent use.
type Plan struct {
	tags    []Tag
	reqs    []Request
	invalid []bool
	skipped []int
	maxGap  int
	maxRegs int
	maxBits int
}

// planTables is the order in which tables appear in a plan.
var planTables = []Table{TableCoil, TableDiscreteInput, TableHolding, TableInput}

// NewPlan plans the reads of device d. A zero MaxRegistersPerRequest or
// MaxBitsPerRequest means the protocol limit; limits above the protocol's are
// capped; a negative MaxGap counts as 0. A tag larger than the limit gets a
// request of its own (the device will refuse it and Reject marks it invalid).
// Tags that cannot be addressed at all (unknown table or type, outside
// 0..65535) are left out of every request and listed by Skipped; ParseConfig
// rejects such tags, so a validated device has none.
func NewPlan(d *Device) *Plan {
	p := &Plan{
		tags:    d.Tags,
		invalid: make([]bool, len(d.Tags)),
		maxGap:  max(d.MaxGap, 0),
		maxRegs: limitFor(d, TableHolding),
		maxBits: limitFor(d, TableCoil),
	}
	byTable := make(map[Table][]int)
	for i := range d.Tags {
		t := &d.Tags[i]
		n := t.Registers()
		if !t.Table.Valid() || n <= 0 || t.Address < 0 || t.Address+n-1 > 0xFFFF {
			p.skipped = append(p.skipped, i)
			continue
		}
		byTable[t.Table] = append(byTable[t.Table], i)
	}
	for _, table := range planTables {
		idx := byTable[table]
		if len(idx) == 0 {
			continue
		}
		sort.SliceStable(idx, func(a, b int) bool {
			return d.Tags[idx[a]].Address < d.Tags[idx[b]].Address
		})
		p.reqs = p.coalesce(table, idx, p.reqs)
	}
	return p
}

// coalesce appends to dst the fewest requests reading tags idx (sorted by
// address, all of table): greedily, each request starts at the first tag not
// yet read and takes following tags while the span stays within the limit and
// the unused space before each tag within maxGap. For tags that do not overlap
// greedy is optimal (no plan covers a prefix of the tags with fewer requests and
// ends later); tags that overlap, such as bits of one register, are simply read
// together.
func (p *Plan) coalesce(table Table, idx []int, dst []Request) []Request {
	limit := p.maxRegs
	if table.IsBit() {
		limit = p.maxBits
	}
	first := 0
	start, end := 0, 0 // span [start, end) of idx[first:k]
	for k, i := range idx {
		t := &p.tags[i]
		a, e := t.Address, t.Address+t.Registers()
		if k > first && a-end <= p.maxGap && max(end, e)-start <= limit {
			end = max(end, e)
			continue
		}
		if k > first {
			dst = append(dst, p.request(table, idx[first:k:k]))
		}
		first, start, end = k, a, e
	}
	if first < len(idx) {
		dst = append(dst, p.request(table, idx[first:]))
	}
	return dst
}

func limitFor(d *Device, table Table) int {
	if table.IsBit() {
		if d.MaxBitsPerRequest <= 0 || d.MaxBitsPerRequest > MaxBits {
			return MaxBits
		}
		return d.MaxBitsPerRequest
	}
	if d.MaxRegistersPerRequest <= 0 || d.MaxRegistersPerRequest > MaxRegisters {
		return MaxRegisters
	}
	return d.MaxRegistersPerRequest
}

// request builds the read covering tags idx (sorted by address, same table).
func (p *Plan) request(table Table, idx []int) Request {
	start, end := p.tags[idx[0]].Address, 0
	for _, i := range idx {
		end = max(end, p.tags[i].Address+p.tags[i].Registers())
	}
	return Request{Table: table, Address: uint16(start), Quantity: uint16(end - start), Tags: idx}
}

// Requests is the current working plan. The slice and its requests belong to
// the plan: callers read them and must not modify them; Reject changes the plan.
func (p *Plan) Requests() []Request { return p.reqs }

// Reject reports that request i of Requests was refused with exception 2
// (illegal data address) or 3 (illegal data value). A request of several tags
// is split at the tag boundary in the middle (each half re-coalesced, so a half
// never spans more than max_gap of unused space); the plan keeps the split — the
// replacements take positions i, i+1, … of Requests and later requests move up —
// and Reject returns them so the caller can read them in the same cycle: a
// poller walking Requests by index simply reads position i again. Repeated
// rejections thus narrow down to the tags that are really invalid. A single-tag
// request that is rejected marks its tag invalid and returns (nil, true): the
// tag keeps its own request, retried each cycle, so it recovers when the device
// is fixed (see Accept). An i out of range changes nothing.
func (p *Plan) Reject(i int) (replacement []Request, invalid bool) {
	if i < 0 || i >= len(p.reqs) {
		return nil, false
	}
	r := p.reqs[i]
	if len(r.Tags) == 1 {
		p.invalid[r.Tags[0]] = true
		return nil, true
	}
	mid := len(r.Tags) / 2
	repl := p.coalesce(r.Table, r.Tags[:mid:mid], nil)
	repl = p.coalesce(r.Table, r.Tags[mid:], repl)
	reqs := make([]Request, 0, len(p.reqs)+len(repl)-1)
	reqs = append(reqs, p.reqs[:i]...)
	reqs = append(reqs, repl...)
	reqs = append(reqs, p.reqs[i+1:]...)
	p.reqs = reqs
	return slices.Clone(repl), false
}

// Accept reports that request i was answered: its tags are valid again.
func (p *Plan) Accept(i int) {
	if i < 0 || i >= len(p.reqs) {
		return
	}
	for _, t := range p.reqs[i].Tags {
		p.invalid[t] = false
	}
}

// Invalid reports whether tag (an index into the device's Tags) was refused by
// the device on its own and not answered since.
func (p *Plan) Invalid(tag int) bool {
	return tag >= 0 && tag < len(p.invalid) && p.invalid[tag]
}

// Skipped lists the tags NewPlan could not place in any request (see NewPlan).
func (p *Plan) Skipped() []int { return p.skipped }
