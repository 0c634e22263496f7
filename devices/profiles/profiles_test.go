package profiles

import (
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestEmbeddedProfilesParseStrictly(t *testing.T) {
	if _, err := load(); err != nil {
		t.Fatalf("embedded profiles: %v", err)
	}
	names := Names()
	for _, want := range []string{"eastron-sdm120", "eastron-sdm630", "fieldgate-demo-drive"} {
		if !slices.Contains(names, want) {
			t.Errorf("profile %q missing from %v", want, names)
		}
	}
	entries, err := files.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != len(names) {
		t.Errorf("%d embedded files but %d profiles", len(entries), len(names))
	}
	for _, name := range names {
		p, err := Lookup(name)
		if err != nil {
			t.Fatalf("Lookup(%q): %v", name, err)
		}
		if p.Datasheet == "" || p.Vendor == "" || p.Model == "" || p.Kind == "" {
			t.Errorf("%s: datasheet, vendor, model and kind are required", name)
		}
		if p.Kind != KindSynthetic && p.Revision == "" {
			t.Errorf("%s: a real device's profile must cite the revision of its document", name)
		}
		tags := map[string]bool{}
		for _, tag := range p.Tags {
			if tags[tag.Name] {
				t.Errorf("%s: duplicate tag %q", name, tag.Name)
			}
			tags[tag.Name] = true
			if tag.Address < 0 || tag.Address+tag.Width() > 65536 {
				t.Errorf("%s: tag %q address %d width %d out of range", name, tag.Name, tag.Address, tag.Width())
			}
		}
	}
}

// TestDemoDriveCoversEverything keeps the synthetic drive useful as the one
// device that exercises every table, type and byte order.
func TestDemoDriveCoversEverything(t *testing.T) {
	p, err := Lookup("fieldgate-demo-drive")
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, tag := range p.Tags {
		seen["table "+tag.Table] = true
		seen["type "+tag.Type] = true
		if tag.Width() >= 2 && tag.Type != "string" {
			seen["order "+tag.Order()] = true
		}
		if tag.Bit != nil {
			seen["bit"] = true
		}
		if tag.Scale != nil {
			seen["scale"] = true
		}
		if tag.Offset != 0 {
			seen["offset"] = true
		}
	}
	var want []string
	for _, x := range Tables {
		want = append(want, "table "+x)
	}
	for _, x := range Types {
		want = append(want, "type "+x)
	}
	for _, x := range ByteOrders {
		want = append(want, "order "+x)
	}
	want = append(want, "bit", "scale", "offset")
	for _, w := range want {
		if !seen[w] {
			t.Errorf("fieldgate-demo-drive lacks %s", w)
		}
	}
}

func TestLookupUnknownListsValidNames(t *testing.T) {
	_, err := Lookup("eastron-sdm999")
	if err == nil {
		t.Fatal("no error for unknown profile")
	}
	for _, want := range []string{`"eastron-sdm999"`, "eastron-sdm630", "eastron-sdm120"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
}

func TestLookupReturnsACopy(t *testing.T) {
	a, _ := Lookup("fieldgate-demo-drive")
	a.Tags[0].Name = "changed"
	for i := range a.Tags {
		if a.Tags[i].Scale != nil {
			*a.Tags[i].Scale = 42
		}
	}
	b, _ := Lookup("fieldgate-demo-drive")
	if b.Tags[0].Name == "changed" {
		t.Error("Lookup shares tags between callers")
	}
	for _, tag := range b.Tags {
		if tag.Scale != nil && *tag.Scale == 42 {
			t.Error("Lookup shares scale pointers between callers")
		}
	}
}

func TestParseFixtures(t *testing.T) {
	good, _ := filepath.Glob("testdata/*.good.yml")
	bad, _ := filepath.Glob("testdata/*.bad.yml")
	if len(good) == 0 || len(bad) == 0 {
		t.Fatal("no fixtures in testdata")
	}
	for _, f := range good {
		t.Run(filepath.Base(f), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := Parse(f, data); err != nil {
				t.Errorf("Parse: %v", err)
			}
		})
	}
	for _, f := range bad {
		t.Run(filepath.Base(f), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			// The first line of a bad fixture is "# want: SUBSTRING".
			first, _, _ := strings.Cut(string(data), "\n")
			want, ok := strings.CutPrefix(first, "# want: ")
			if !ok {
				t.Fatalf("%s: first line must be '# want: ...'", f)
			}
			_, err = Parse(f, data)
			if err == nil {
				t.Fatalf("Parse accepted %s", f)
			}
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not contain %q", err, want)
			}
		})
	}
}

func TestSimValues(t *testing.T) {
	at := time.Unix(1_800_000_000, 0) // a multiple of every period used below
	tests := []struct {
		name string
		tag  Tag
		at   time.Time
		want any
	}{
		{"sine at start is mid", Tag{Type: "float32", Sim: &Sim{Min: 10, Max: 20, Period: Duration(time.Minute)}}, at, 15.0},
		{"sine quarter is max", Tag{Type: "float32", Sim: &Sim{Min: 10, Max: 20, Period: Duration(time.Minute)}}, at.Add(15 * time.Second), 20.0},
		{"sine phase", Tag{Type: "float32", Sim: &Sim{Min: 10, Max: 20, Period: Duration(time.Minute), Phase: 0.75}}, at, 10.0},
		{"ramp", Tag{Type: "uint16", Sim: &Sim{Kind: "ramp", Min: 0, Max: 100, Period: Duration(10 * time.Second)}}, at.Add(2500 * time.Millisecond), 25.0},
		{"square low", Tag{Type: "int16", Sim: &Sim{Kind: "square", Min: -1, Max: 1, Period: Duration(10 * time.Second)}}, at.Add(time.Second), -1.0},
		{"square high", Tag{Type: "int16", Sim: &Sim{Kind: "square", Min: -1, Max: 1, Period: Duration(10 * time.Second)}}, at.Add(6 * time.Second), 1.0},
		{"constant", Tag{Type: "float64", Sim: &Sim{Kind: "constant", Value: 7.5}}, at, 7.5},
		{"counter", Tag{Type: "uint32", Sim: &Sim{Kind: "counter", Min: 100, Max: 1e12, Rate: 2}}, CounterEpoch.Add(10 * time.Second), 120.0},
		{"counter wraps", Tag{Type: "uint32", Sim: &Sim{Kind: "counter", Min: 100, Max: 110, Rate: 1}}, CounterEpoch.Add(13 * time.Second), 103.0},
		{"bool default square", Tag{Type: "bool"}, at.Add(6 * time.Second), true},
		{"bool default square low", Tag{Type: "bool"}, at.Add(4 * time.Second), false},
		{"bool constant", Tag{Type: "bool", Sim: &Sim{Kind: "constant", Value: 1}}, at, true},
		{"string text", Tag{Type: "string", Length: 4, Sim: &Sim{Text: "abc"}}, at, "abc"},
		{"string default", Tag{Name: "serial", Type: "string", Length: 4}, at, "serial"},
		{"number default", Tag{Type: "uint16"}, at, 50.0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := tc.tag.SimValue(tc.at)
			if g, ok := got.(float64); ok {
				if w, ok := tc.want.(float64); !ok || math.Abs(g-w) > 1e-6 {
					t.Errorf("SimValue = %v, want %v", got, tc.want)
				}
				return
			}
			if got != tc.want {
				t.Errorf("SimValue = %#v, want %#v", got, tc.want)
			}
		})
	}
}

// TestSimStaysInRange samples every embedded numeric tag and checks the sim
// never leaves [min, max]: a sim outside its range would overflow registers.
func TestSimStaysInRange(t *testing.T) {
	start := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	for _, name := range Names() {
		p, _ := Lookup(name)
		for _, tag := range p.Tags {
			s := tag.effectiveSim()
			for i := 0; i < 200; i++ {
				v, ok := tag.SimValue(start.Add(time.Duration(i) * 1777 * time.Millisecond)).(float64)
				if !ok {
					break
				}
				lo, hi := s.Min, s.Max
				if s.Kind == "constant" {
					lo, hi = s.Value, s.Value
				}
				if v < lo-1e-9 || v > hi+1e-9 {
					t.Fatalf("%s/%s: sim value %v outside [%v, %v]", name, tag.Name, v, lo, hi)
				}
			}
		}
	}
}

// TestLibraryCoversTheDeviceKinds: the library has at least eight real
// devices from several makers, among them a drive, a temperature controller
// and a power analyser, each citing a document and its revision.
func TestLibraryCoversTheDeviceKinds(t *testing.T) {
	all, err := All()
	if err != nil {
		t.Fatal(err)
	}
	real, makers, kinds := 0, map[string]bool{}, map[string]int{}
	for _, p := range all {
		if p.Kind == KindSynthetic {
			continue
		}
		real++
		makers[p.Vendor] = true
		kinds[p.Kind]++
	}
	if real < 8 {
		t.Errorf("%d real device profiles, want at least 8", real)
	}
	if kinds[KindEnergyMeter] < 3 || len(makers) < 5 {
		t.Errorf("energy meters %d (want >= 3), makers %d (want >= 5)", kinds[KindEnergyMeter], len(makers))
	}
	for _, k := range []string{KindDrive, KindTemperatureController, KindPowerAnalyser} {
		if kinds[k] == 0 {
			t.Errorf("no profile of kind %s", k)
		}
	}
}

// TestRegisterMapsPinned pins registers of each real device as its document
// gives them (address on the wire, table, type, byte order, scale), so an
// edit of a YAML file cannot move them silently. The comments name the
// document's own numbering where it differs from the wire address.
func TestRegisterMapsPinned(t *testing.T) {
	tests := []struct {
		profile, tag string
		table        string
		address      int
		typ, order   string
		scale        float64
	}{
		{"eastron-sdm630", "voltage_l1", "input_register", 0x0000, "float32", "ABCD", 1},
		{"eastron-sdm630", "current_l1", "input_register", 0x0006, "float32", "ABCD", 1},
		{"eastron-sdm630", "power_total", "input_register", 0x0034, "float32", "ABCD", 1},
		{"eastron-sdm630", "frequency", "input_register", 0x0046, "float32", "ABCD", 1},
		{"eastron-sdm630", "import_energy", "input_register", 0x0048, "float32", "ABCD", 1},
		{"eastron-sdm630", "export_energy", "input_register", 0x004A, "float32", "ABCD", 1},
		{"eastron-sdm630", "voltage_l1_l2", "input_register", 0x00C8, "float32", "ABCD", 1},
		{"eastron-sdm630", "total_energy", "input_register", 0x0156, "float32", "ABCD", 1},
		{"eastron-sdm120", "voltage", "input_register", 0x0000, "float32", "ABCD", 1},
		{"eastron-sdm120", "current", "input_register", 0x0006, "float32", "ABCD", 1},
		{"eastron-sdm120", "active_power", "input_register", 0x000C, "float32", "ABCD", 1},
		{"eastron-sdm120", "frequency", "input_register", 0x0046, "float32", "ABCD", 1},
		{"eastron-sdm120", "import_energy", "input_register", 0x0048, "float32", "ABCD", 1},
		{"eastron-sdm120", "total_energy", "input_register", 0x0156, "float32", "ABCD", 1},
		{"schneider-iem3250", "current_l1", "holding_register", 2999, "float32", "ABCD", 1},         // register 3000
		{"schneider-iem3250", "voltage_l1_n", "holding_register", 3027, "float32", "ABCD", 1},       // register 3028
		{"schneider-iem3250", "active_power_total", "holding_register", 3059, "float32", "ABCD", 1}, // register 3060, kW
		{"schneider-iem3250", "frequency", "holding_register", 3109, "float32", "ABCD", 1},          // register 3110
		{"schneider-iem3250", "active_energy_import", "holding_register", 3203, "int64", "ABCD", 1}, // register 3204, Wh
		{"schneider-iem3250", "meter_model", "holding_register", 49, "string", "ABCD", 1},           // register 50
		{"abb-b23", "active_import_energy", "holding_register", 0x5000, "uint64", "ABCD", 0.01},
		{"abb-b23", "voltage_l1_n", "holding_register", 0x5B00, "uint32", "ABCD", 0.1},
		{"abb-b23", "current_l1", "holding_register", 0x5B0C, "uint32", "ABCD", 0.01},
		{"abb-b23", "active_power_total", "holding_register", 0x5B14, "int32", "ABCD", 0.01},
		{"abb-b23", "frequency", "holding_register", 0x5B2C, "uint16", "ABCD", 0.01},
		{"abb-b23", "power_factor_total", "holding_register", 0x5B3A, "int16", "ABCD", 0.001},
		{"carlo-gavazzi-em24", "voltage_l1_n", "input_register", 0x0000, "int32", "CDAB", 0.1},
		{"carlo-gavazzi-em24", "current_l1", "input_register", 0x000C, "int32", "CDAB", 0.001},
		{"carlo-gavazzi-em24", "power_sys", "input_register", 0x0028, "int32", "CDAB", 0.1},
		{"carlo-gavazzi-em24", "power_factor_sys", "input_register", 0x0035, "int16", "ABCD", 0.001},
		{"carlo-gavazzi-em24", "frequency", "input_register", 0x0037, "int16", "ABCD", 0.1},
		{"carlo-gavazzi-em24", "energy_import_total", "input_register", 0x003E, "int32", "CDAB", 0.1},
		{"janitza-umg96rm", "voltage_l1_n", "holding_register", 19000, "float32", "ABCD", 1},
		{"janitza-umg96rm", "real_power_sum", "holding_register", 19026, "float32", "ABCD", 1},
		{"janitza-umg96rm", "frequency", "holding_register", 19050, "float32", "ABCD", 1},
		{"janitza-umg96rm", "real_energy_consumed_sum", "holding_register", 19068, "float32", "ABCD", 1},
		{"janitza-umg96rm", "thd_i_l3", "holding_register", 19120, "float32", "ABCD", 1},
		{"eaton-mmx", "control_word", "holding_register", 2000, "uint16", "ABCD", 1},      // ID 2001, register 42001
		{"eaton-mmx", "status_word", "holding_register", 2100, "uint16", "ABCD", 1},       // ID 2101, register 42101
		{"eaton-mmx", "motor_frequency", "holding_register", 2103, "int16", "ABCD", 0.01}, // ID 2104
		{"eaton-mmx", "motor_current", "holding_register", 2105, "uint16", "ABCD", 0.01},  // ID 2106
		{"eurotherm-3200", "process_value", "holding_register", 1, "int16", "ABCD", 0.1},  // PV.IN
		{"eurotherm-3200", "working_output", "holding_register", 4, "int16", "ABCD", 0.1}, // WRK.OP
		{"eurotherm-3200", "remote_setpoint", "holding_register", 26, "int16", "ABCD", 0.1},
	}
	for _, tc := range tests {
		p, err := Lookup(tc.profile)
		if err != nil {
			t.Fatal(err)
		}
		i := slices.IndexFunc(p.Tags, func(tag Tag) bool { return tag.Name == tc.tag })
		if i < 0 {
			t.Errorf("%s: no tag %q", tc.profile, tc.tag)
			continue
		}
		tag := p.Tags[i]
		if tag.Table != tc.table || tag.Address != tc.address || tag.Type != tc.typ || tag.Order() != tc.order || tag.ScaleOr1() != tc.scale {
			t.Errorf("%s/%s = %s %d %s %s ×%v, want %s %d %s %s ×%v", tc.profile, tc.tag,
				tag.Table, tag.Address, tag.Type, tag.Order(), tag.ScaleOr1(), tc.table, tc.address, tc.typ, tc.order, tc.scale)
		}
	}
}
