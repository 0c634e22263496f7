package modbus

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

func reg(name string, table Table, addr int, typ DataType) Tag {
	t := Tag{Name: name, Table: table, Address: addr, Type: typ}
	if typ == TypeBool && !table.IsBit() {
		t.Bit = ptr(0)
	}
	return t
}

func str(name string, addr, length int) Tag {
	return Tag{Name: name, Table: TableHolding, Address: addr, Type: TypeString, Length: length}
}

// span is a request without its tags, for compact expectations.
type span struct {
	table   Table
	address uint16
	qty     uint16
}

func spans(rs []Request) []span {
	out := make([]span, len(rs))
	for i, r := range rs {
		out[i] = span{r.Table, r.Address, r.Quantity}
	}
	return out
}

func TestNewPlan(t *testing.T) {
	tests := []struct {
		name string
		dev  Device
		want []span
	}{
		{
			name: "contiguous tags coalesce",
			dev: Device{MaxGap: 0, Tags: []Tag{
				reg("a", TableInput, 0, TypeFloat32), reg("b", TableInput, 2, TypeFloat32), reg("c", TableInput, 4, TypeUint16),
			}},
			want: []span{{TableInput, 0, 5}},
		},
		{
			name: "gap within max_gap is read through",
			dev: Device{MaxGap: 10, Tags: []Tag{
				reg("a", TableHolding, 0, TypeUint16), reg("b", TableHolding, 11, TypeUint16),
			}},
			want: []span{{TableHolding, 0, 12}},
		},
		{
			name: "gap beyond max_gap splits",
			dev: Device{MaxGap: 10, Tags: []Tag{
				reg("a", TableHolding, 0, TypeUint16), reg("b", TableHolding, 12, TypeUint16),
			}},
			want: []span{{TableHolding, 0, 1}, {TableHolding, 12, 1}},
		},
		{
			name: "tables never mix; order coil, discrete, holding, input",
			dev: Device{MaxGap: 10, Tags: []Tag{
				reg("i", TableInput, 0, TypeUint16), reg("h", TableHolding, 0, TypeUint16),
				reg("d", TableDiscreteInput, 0, TypeBool), reg("c", TableCoil, 0, TypeBool),
			}},
			want: []span{{TableCoil, 0, 1}, {TableDiscreteInput, 0, 1}, {TableHolding, 0, 1}, {TableInput, 0, 1}},
		},
		{
			name: "125-register protocol limit",
			dev: Device{Tags: []Tag{
				reg("a", TableHolding, 0, TypeUint16), reg("b", TableHolding, 124, TypeUint16), reg("c", TableHolding, 125, TypeUint16),
			}, MaxGap: 200},
			want: []span{{TableHolding, 0, 125}, {TableHolding, 125, 1}},
		},
		{
			name: "multi-register tag is never cut by the limit",
			dev: Device{Tags: []Tag{
				reg("a", TableHolding, 0, TypeUint16), reg("b", TableHolding, 123, TypeFloat32),
			}, MaxGap: 200},
			want: []span{{TableHolding, 0, 125}},
		},
		{
			name: "multi-register tag straddling the limit starts a new request",
			dev: Device{Tags: []Tag{
				reg("a", TableHolding, 0, TypeUint16), reg("b", TableHolding, 124, TypeFloat32),
			}, MaxGap: 200},
			want: []span{{TableHolding, 0, 1}, {TableHolding, 124, 2}},
		},
		{
			name: "device register limit",
			dev: Device{MaxRegistersPerRequest: 4, MaxGap: 10, Tags: []Tag{
				reg("a", TableInput, 0, TypeFloat32), reg("b", TableInput, 2, TypeFloat32), reg("c", TableInput, 4, TypeFloat32),
			}},
			want: []span{{TableInput, 0, 4}, {TableInput, 4, 2}},
		},
		{
			name: "2000-bit protocol limit",
			dev: Device{MaxGap: 2000, Tags: []Tag{
				reg("a", TableCoil, 0, TypeBool), reg("b", TableCoil, 1999, TypeBool), reg("c", TableCoil, 2000, TypeBool),
			}},
			want: []span{{TableCoil, 0, 2000}, {TableCoil, 2000, 1}},
		},
		{
			name: "device bit limit",
			dev: Device{MaxBitsPerRequest: 8, MaxGap: 10, Tags: []Tag{
				reg("a", TableDiscreteInput, 0, TypeBool), reg("b", TableDiscreteInput, 7, TypeBool), reg("c", TableDiscreteInput, 8, TypeBool),
			}},
			want: []span{{TableDiscreteInput, 0, 8}, {TableDiscreteInput, 8, 1}},
		},
		{
			name: "bits of one register and its word share a read",
			dev: Device{MaxGap: 0, Tags: []Tag{
				reg("w", TableHolding, 7, TypeUint16), reg("b0", TableHolding, 7, TypeBool), reg("b1", TableHolding, 7, TypeBool),
				reg("next", TableHolding, 8, TypeUint16),
			}},
			want: []span{{TableHolding, 7, 2}},
		},
		{
			name: "overlapping long tag keeps the span",
			dev: Device{MaxGap: 0, Tags: []Tag{
				str("s", 10, 8), reg("inside", TableHolding, 12, TypeUint16), reg("after", TableHolding, 18, TypeUint16),
			}},
			want: []span{{TableHolding, 10, 9}},
		},
		{
			name: "unsorted input",
			dev: Device{MaxGap: 0, Tags: []Tag{
				reg("c", TableInput, 4, TypeUint16), reg("a", TableInput, 0, TypeFloat32), reg("b", TableInput, 2, TypeFloat32),
			}},
			want: []span{{TableInput, 0, 5}},
		},
		{
			name: "top of the address space",
			dev:  Device{Tags: []Tag{reg("a", TableHolding, 65532, TypeUint64)}},
			want: []span{{TableHolding, 65532, 4}},
		},
		{
			name: "no tags",
			dev:  Device{},
			want: []span{},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := NewPlan(&tc.dev)
			got := spans(p.Requests())
			if !slices.Equal(got, tc.want) {
				t.Errorf("requests = %v, want %v", got, tc.want)
			}
			checkPlan(t, &tc.dev, p)
		})
	}
}

func TestNewPlanTagOrderWithinRequest(t *testing.T) {
	d := Device{MaxGap: 5, Tags: []Tag{
		reg("c", TableInput, 4, TypeUint16), reg("a", TableInput, 0, TypeFloat32), reg("b", TableInput, 2, TypeFloat32),
	}}
	p := NewPlan(&d)
	if got, want := p.Requests()[0].Tags, []int{1, 2, 0}; !slices.Equal(got, want) {
		t.Errorf("Tags = %v, want %v (ascending address)", got, want)
	}
}

func TestNewPlanSkipsUnaddressableTags(t *testing.T) {
	d := Device{Tags: []Tag{
		reg("ok", TableHolding, 0, TypeUint16),
		{Name: "table", Table: "nope", Type: TypeUint16},
		{Name: "type", Table: TableHolding, Type: "nope"},
		{Name: "neg", Table: TableHolding, Address: -1, Type: TypeUint16},
		{Name: "past", Table: TableHolding, Address: 65535, Type: TypeUint32},
		{Name: "nolen", Table: TableHolding, Type: TypeString},
	}}
	p := NewPlan(&d)
	if got, want := p.Skipped(), []int{1, 2, 3, 4, 5}; !slices.Equal(got, want) {
		t.Errorf("Skipped = %v, want %v", got, want)
	}
	checkPlan(t, &d, p)
}

// checkPlan asserts the planner's invariants: every addressable tag is read by
// exactly one request, no request exceeds a limit (unless it is one oversized
// tag), requests hold one table, cover their tags exactly, stay inside the
// address space, list tags in ascending address, and read gaps of at most
// MaxGap between consecutive tags.
func checkPlan(t testing.TB, d *Device, p *Plan) {
	t.Helper()
	count := make([]int, len(d.Tags))
	for _, i := range p.Skipped() {
		count[i]++
	}
	for _, r := range p.Requests() {
		if len(r.Tags) == 0 {
			t.Fatalf("request %v reads no tag", r)
		}
		limit := limitFor(d, r.Table)
		if int(r.Quantity) > limit && len(r.Tags) > 1 {
			t.Fatalf("request %v exceeds limit %d", r, limit)
		}
		if r.Quantity == 0 || int(r.Address)+int(r.Quantity) > 0x10000 {
			t.Fatalf("request %v leaves the address space", r)
		}
		lo, hi, end := 1<<30, -1, -1
		for k, i := range r.Tags {
			if i < 0 || i >= len(d.Tags) {
				t.Fatalf("request %v: tag index %d out of range", r, i)
			}
			count[i]++
			tag := &d.Tags[i]
			if tag.Table != r.Table {
				t.Fatalf("request %v carries tag %q of table %s", r, tag.Name, tag.Table)
			}
			a, e := tag.Address, tag.Address+tag.Registers()
			if a < int(r.Address) || e > int(r.Address)+int(r.Quantity) {
				t.Fatalf("request %v does not cover tag %q at %d+%d", r, tag.Name, a, tag.Registers())
			}
			if k > 0 {
				if a < d.Tags[r.Tags[k-1]].Address {
					t.Fatalf("request %v: tags not in ascending address", r)
				}
				if gap := a - end; gap > max(d.MaxGap, 0) {
					t.Fatalf("request %v spans a gap of %d > max_gap %d before tag %q", r, gap, d.MaxGap, tag.Name)
				}
			}
			lo, hi, end = min(lo, a), max(hi, e), max(end, e)
		}
		if lo != int(r.Address) || hi != int(r.Address)+int(r.Quantity) {
			t.Fatalf("request %v reads beyond its tags [%d,%d)", r, lo, hi)
		}
	}
	for i, n := range count {
		if n != 1 {
			t.Fatalf("tag %d %q is read %d times", i, d.Tags[i].Name, n)
		}
	}
}

// fakeDevice refuses (exception 2) any read touching an address in bad, and
// (exception 3) any read longer than limit registers.
type fakeDevice struct {
	bad   map[Table]map[int]bool
	limit int
}

func (f *fakeDevice) refuses(r Request) bool {
	if f.limit > 0 && int(r.Quantity) > f.limit {
		return true
	}
	for a := int(r.Address); a < int(r.Address)+int(r.Quantity); a++ {
		if f.bad[r.Table][a] {
			return true
		}
	}
	return false
}

// pollCycle runs one cycle the way the poller does: walk Requests by index;
// on a refusal call Reject and read position i again (now the first half).
// It returns the tags reported bad and the number of reads sent.
func pollCycle(t testing.TB, p *Plan, dev *fakeDevice) (bad map[int]bool, reads int) {
	t.Helper()
	bad = map[int]bool{}
	for i := 0; i < len(p.Requests()); i++ {
		reads++
		if reads > 100000 {
			t.Fatal("poll cycle does not terminate")
		}
		r := p.Requests()[i]
		if !dev.refuses(r) {
			p.Accept(i)
			continue
		}
		repl, invalid := p.Reject(i)
		if invalid {
			if len(repl) != 0 || len(r.Tags) != 1 {
				t.Fatalf("Reject(%d) of %v: invalid with replacements %v", i, r, repl)
			}
			bad[r.Tags[0]] = true
			continue
		}
		if len(repl) < 2 || !slices.Equal(spans(p.Requests()[i:i+len(repl)]), spans(repl)) {
			t.Fatalf("Reject(%d): replacements %v are not at positions i, i+1, ... of %v", i, repl, p.Requests())
		}
		i-- // read the first half next
	}
	return bad, reads
}

func TestPlanReject(t *testing.T) {
	d := Device{MaxGap: 10, Tags: []Tag{
		reg("a", TableHolding, 0, TypeUint16),
		reg("b", TableHolding, 1, TypeFloat32),
		reg("missing", TableHolding, 5, TypeUint16), // the device has no register 5
		reg("c", TableHolding, 6, TypeUint16),
		reg("d", TableHolding, 8, TypeUint32),
		reg("e", TableInput, 0, TypeUint16),
	}}
	dev := &fakeDevice{bad: map[Table]map[int]bool{TableHolding: {5: true}}}
	p := NewPlan(&d)
	if got := len(p.Requests()); got != 2 {
		t.Fatalf("initial plan has %d requests, want 2", got)
	}
	bad, _ := pollCycle(t, p, dev)
	if want := map[int]bool{2: true}; !mapsEqual(bad, want) {
		t.Errorf("first cycle: bad tags %v, want %v", bad, want)
	}
	if !p.Invalid(2) || p.Invalid(0) || p.Invalid(3) {
		t.Errorf("Invalid: 0=%v 2=%v 3=%v, want only 2", p.Invalid(0), p.Invalid(2), p.Invalid(3))
	}
	checkPlan(t, &d, p)
	learned := spans(p.Requests())

	// The second cycle uses the learned plan: the only refusal is the invalid
	// tag's own request, retried in case the device was fixed.
	bad, reads := pollCycle(t, p, dev)
	if want := map[int]bool{2: true}; !mapsEqual(bad, want) {
		t.Errorf("second cycle: bad tags %v, want %v", bad, want)
	}
	if reads != len(learned) || !slices.Equal(spans(p.Requests()), learned) {
		t.Errorf("second cycle: %d reads, plan %v; want the learned plan %v unchanged", reads, spans(p.Requests()), learned)
	}

	// The device is fixed: the tag recovers.
	delete(dev.bad[TableHolding], 5)
	if bad, _ := pollCycle(t, p, dev); len(bad) != 0 || p.Invalid(2) {
		t.Errorf("after the fix: bad %v, Invalid(2) = %v", bad, p.Invalid(2))
	}
}

func TestPlanRejectOutOfRange(t *testing.T) {
	d := Device{Tags: []Tag{reg("a", TableHolding, 0, TypeUint16)}}
	p := NewPlan(&d)
	for _, i := range []int{-1, 1, 100} {
		if repl, invalid := p.Reject(i); repl != nil || invalid {
			t.Errorf("Reject(%d) = %v, %v", i, repl, invalid)
		}
		p.Accept(i)
	}
	if p.Invalid(-1) || p.Invalid(5) {
		t.Error("Invalid of an unknown tag is true")
	}
	checkPlan(t, &d, p)
}

// TestPlanRejectDeviceLimit: a device that refuses reads longer than 16
// registers (exception 3) gets a plan of reads it accepts, no tag marked bad.
func TestPlanRejectDeviceLimit(t *testing.T) {
	var d Device
	d.MaxGap = 10
	for i := range 40 {
		d.Tags = append(d.Tags, reg(fmt.Sprint("t", i), TableInput, 2*i, TypeFloat32))
	}
	p := NewPlan(&d)
	dev := &fakeDevice{limit: 16}
	if bad, _ := pollCycle(t, p, dev); len(bad) != 0 {
		t.Fatalf("bad tags %v, want none", bad)
	}
	for _, r := range p.Requests() {
		if r.Quantity > 16 {
			t.Errorf("learned request %v exceeds the device's 16", r)
		}
	}
	checkPlan(t, &d, p)
}

// TestNewPlanFewestRequests compares the planner with an exhaustive dynamic
// program over random devices of non-overlapping tags: no valid plan has
// fewer requests.
func TestNewPlanFewestRequests(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	sizes := []DataType{TypeUint16, TypeFloat32, TypeFloat64}
	for round := range 500 {
		d := Device{MaxRegistersPerRequest: 4 + rng.IntN(40), MaxGap: rng.IntN(8)}
		addr := rng.IntN(5)
		for i := range 1 + rng.IntN(30) {
			tag := reg(fmt.Sprint("t", i), TableHolding, addr, sizes[rng.IntN(len(sizes))])
			d.Tags = append(d.Tags, tag)
			addr += tag.Registers() + rng.IntN(12)
		}
		// best[i]: fewest requests for the first i tags (in address order).
		n := len(d.Tags)
		best := make([]int, n+1)
		for i := 1; i <= n; i++ {
			best[i] = 1 << 30
			for j := i - 1; j >= 0; j-- { // tags j..i-1 in one request
				first, last := &d.Tags[j], &d.Tags[i-1]
				if last.Address+last.Registers()-first.Address > d.MaxRegistersPerRequest {
					break
				}
				if j < i-1 {
					next := &d.Tags[j+1]
					if next.Address-(first.Address+first.Registers()) > d.MaxGap {
						break
					}
				}
				best[i] = min(best[i], best[j]+1)
			}
		}
		p := NewPlan(&d)
		checkPlan(t, &d, p)
		if got := len(p.Requests()); got != best[n] {
			t.Fatalf("round %d: %d requests, the optimum is %d; device %+v", round, got, best[n], d)
		}
	}
}

func mapsEqual(a, b map[int]bool) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// FuzzPlan builds a device from the fuzz input (4 bytes a tag, limits from
// the first bytes), checks the planner's invariants, then lets a fake device
// refuse some addresses and checks that exactly the tags touching them end up
// bad and the learned plan still satisfies the invariants.
func FuzzPlan(f *testing.F) {
	f.Add([]byte{125, 200, 10, 0, 0, 0, 0, 1, 2, 0, 2, 3, 2, 0, 9})
	f.Add([]byte{4, 8, 0, 0, 0, 0, 5, 1, 1, 0, 7, 2, 0, 0, 3, 3, 3, 0, 1})
	f.Add([]byte{0, 0, 255, 3, 9, 255, 250, 2, 8, 0, 0, 1, 6, 1, 1})
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) < 3 {
			return
		}
		d := Device{
			MaxRegistersPerRequest: int(data[0]),
			MaxBitsPerRequest:      int(data[1]) * 8,
			MaxGap:                 int(data[2]) - 5,
		}
		dev := &fakeDevice{bad: map[Table]map[int]bool{}}
		for i, b := 0, data[3:]; len(b) >= 4 && i < 300; i, b = i+1, b[4:] {
			table := planTables[b[0]%4]
			typ := validTypes[int(b[1])%len(validTypes)]
			if table.IsBit() {
				typ = TypeBool
			}
			// Cluster addresses so coalescing and overlaps happen; b[3] high
			// bit puts the tag at the top of the address space.
			addr := int(b[2])
			if b[3]&0x80 != 0 {
				addr = 0xFFFF - addr
			}
			tag := Tag{Name: fmt.Sprint("t", i), Table: table, Address: addr, Type: typ}
			switch typ {
			case TypeString:
				tag.Length = int(b[3]&0x7f) + 1
			case TypeBool:
				if !table.IsBit() {
					tag.Bit = ptr(int(b[3] & 15))
				}
			}
			if b[3]&0x40 != 0 { // the device lacks this address
				if dev.bad[table] == nil {
					dev.bad[table] = map[int]bool{}
				}
				dev.bad[table][addr] = true
			}
			d.Tags = append(d.Tags, tag)
		}
		p := NewPlan(&d)
		checkPlan(t, &d, p)
		skipped := map[int]bool{}
		for _, i := range p.Skipped() {
			skipped[i] = true
		}
		bad, _ := pollCycle(t, p, dev)
		checkPlan(t, &d, p)
		for i := range d.Tags {
			if skipped[i] {
				continue
			}
			tag := &d.Tags[i]
			touches := dev.refuses(Request{Table: tag.Table, Address: uint16(tag.Address), Quantity: uint16(tag.Registers())})
			if bad[i] != touches {
				t.Fatalf("tag %d %+v: bad=%v, touches a refused address=%v", i, tag, bad[i], touches)
			}
		}
		// A second cycle sends no more reads than the plan has requests.
		if _, reads := pollCycle(t, p, dev); reads != len(p.Requests()) {
			t.Fatalf("second cycle sent %d reads for %d requests", reads, len(p.Requests()))
		}
	})
}

func BenchmarkNewPlan(b *testing.B) {
	var d Device
	d.MaxGap = DefaultMaxGap
	for i := range 500 {
		d.Tags = append(d.Tags, reg(fmt.Sprint("t", i), planTables[i%4], (i*7)%3000, TypeFloat32))
	}
	for i := range d.Tags {
		if d.Tags[i].Table.IsBit() {
			d.Tags[i].Type = TypeBool
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		NewPlan(&d)
	}
}
