package watch

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"
	"github.com/muesli/termenv"

	"fieldgate/collectors/publish"
	"fieldgate/collectors/reading"
	"fieldgate/gateway/statuspub"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// plain is a renderer without colours, so golden files are plain text.
func plain() *lipgloss.Renderer {
	return lipgloss.NewRenderer(os.Stdout, termenv.WithProfile(termenv.Ascii))
}

// gateway1 is a small gateway: a modbus line with two meters (one silent),
// an OPC UA boiler, their retained statuses and the gateway status.
func gateway1() []Message {
	msgs := []Message{
		gatewayStatusMsg(statuspub.Payload{State: "online", Version: "1.4.0", TS: 1, Collectors: map[string]statuspub.CollectorPayload{
			"modbus-line3": {State: "running", Restarts: 0}, "opcua-boiler": {State: "running", Restarts: 2}}}, t0),
		collectorStatusMsg("modbus-line3", publish.Status{State: "online", Version: "1.4.0", TS: 1,
			Devices: map[string]string{"meter1": "ok", "meter2": "error: timeout"}, Queue: &publish.QueueStatus{Pending: 0}}, t0),
		collectorStatusMsg("opcua-boiler", publish.Status{State: "online", Version: "1.4.0", TS: 1,
			Devices: map[string]string{"boiler1": "ok"}, Queue: &publish.QueueStatus{Pending: 4, Dropped: 2}}, t0),
	}
	for i := 0; i < 3; i++ {
		at := t0.Add(time.Duration(i) * 2 * time.Second)
		msgs = append(msgs,
			batchMsg("modbus-line3", "meter1", at, at, false,
				good("voltage_l1", float32(230.1)+float32(i), "V"), good("voltage_l2", float32(229.8), "V"),
				good("current_l1", 1.25, "A"), good("frequency", float32(50), "Hz"), good("energy", 1234.5, "kWh")),
			batchMsg("modbus-line3", "meter2", at, at, false,
				bad("voltage", "timeout"), bad("current", "timeout")),
			batchMsg("opcua-boiler", "boiler1", at, at, false,
				good("temperature", 71.5, "degC"), reading.Reading{Tag: "pressure", Value: 1.9, Unit: "bar", Quality: reading.Uncertain}),
		)
	}
	return msgs
}

func newTestModel(width, height int) Model {
	st := NewState("fieldgate", "gw1", map[string]time.Duration{"modbus-line3": 2 * time.Second, "opcua-boiler": 2 * time.Second}, 0)
	m := NewModel(st, "tcp://127.0.0.1:1883", t0, WithRenderer(plain()), WithSize(width, height))
	m = step(m, ConnMsg{Connected: true})
	m = step(m, MessagesMsg(gateway1()))
	return step(m, TickMsg(t0.Add(4500*time.Millisecond)))
}

func step(m Model, msg tea.Msg) Model {
	next, _ := m.Update(msg)
	return next.(Model)
}

func keys(m Model, ks ...string) Model {
	for _, k := range ks {
		var msg tea.KeyMsg
		switch k {
		case "down":
			msg = tea.KeyMsg{Type: tea.KeyDown}
		case "up":
			msg = tea.KeyMsg{Type: tea.KeyUp}
		case "pgdown":
			msg = tea.KeyMsg{Type: tea.KeyPgDown}
		case "pgup":
			msg = tea.KeyMsg{Type: tea.KeyPgUp}
		case "enter":
			msg = tea.KeyMsg{Type: tea.KeyEnter}
		case "esc":
			msg = tea.KeyMsg{Type: tea.KeyEsc}
		case "end":
			msg = tea.KeyMsg{Type: tea.KeyEnd}
		default:
			msg = tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune(k)}
		}
		m = step(m, msg)
	}
	return m
}

// golden compares got with testdata/name.golden (rewritten with -update).
func golden(t *testing.T, name, got string) {
	t.Helper()
	// Trailing blanks depend on padding only; the golden files keep lines trimmed.
	lines := strings.Split(got, "\n")
	for i := range lines {
		lines[i] = strings.TrimRight(lines[i], " ")
	}
	got = strings.Join(lines, "\n") + "\n"
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("view differs from %s (go test -update rewrites it):\n--- got\n%s--- want\n%s", path, got, want)
	}
}

func TestViewGolden(t *testing.T) {
	tests := []struct {
		name string
		m    func() Model
	}{
		{"full", func() Model { return newTestModel(120, 40) }},
		{"snapshot", func() Model { return newTestModel(0, 0) }},
		{"scrolled", func() Model { return keys(newTestModel(120, 16), "down", "down") }},
		{"bottom", func() Model { return keys(newTestModel(120, 13), "end") }},
		{"narrow", func() Model { return newTestModel(60, 40) }},
		{"filtering", func() Model { return keys(newTestModel(120, 40), "/", "v", "o", "l", "t") }},
		{"filtered", func() Model { return keys(newTestModel(120, 40), "/", "d", ":", "m", "e", "t", "e", "r", "2", "enter") }},
		{"typed-at-once", func() Model { return keys(newTestModel(120, 40), "/d:meter2", "enter") }},
		{"nomatch", func() Model { return keys(newTestModel(120, 40), "/", "z", "z", "enter") }},
		{"stale", func() Model {
			m := newTestModel(120, 40)
			return step(m, TickMsg(t0.Add(11*time.Second)))
		}},
		{"offline", func() Model {
			m := newTestModel(120, 40)
			return step(m, MessagesMsg{collectorStatusMsg("opcua-boiler", publish.Status{State: "offline", Version: "1.4.0"}, t0.Add(5*time.Second))})
		}},
		{"disconnected", func() Model {
			m := newTestModel(120, 40)
			return step(m, ConnMsg{Err: "connection refused"})
		}},
		{"empty", func() Model {
			return NewModel(NewState("fieldgate", "gw1", nil, 0), "tcp://127.0.0.1:1883", t0, WithRenderer(plain()), WithSize(100, 20))
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			golden(t, "view-"+tc.name, tc.m().View())
		})
	}
}

func TestKeys(t *testing.T) {
	// 9 tags; height 13 leaves 4 lines for the rows.
	m := newTestModel(120, 13)
	ps := m.pageSize()
	n := len(m.state.Rows(Filter{}, m.now))
	if n != 9 || ps != 4 {
		t.Fatalf("rows = %d, page %d; want 9, 4", n, ps)
	}
	for _, tc := range []struct {
		keys []string
		want int
	}{
		{[]string{"down"}, 1},
		{[]string{"j", "j", "k"}, 1},
		{[]string{"up"}, 0},
		{[]string{"pgdown"}, ps - 1},
		{[]string{"pgdown", "pgdown", "pgdown", "pgdown"}, n - ps},
		{[]string{"end", "pgup"}, n - ps - (ps - 1)},
		{[]string{"G", "g"}, 0},
		{[]string{"end", "down"}, n - ps},
	} {
		got := keys(m, tc.keys...)
		if got.Offset() != tc.want {
			t.Errorf("keys %v: offset %d, want %d", tc.keys, got.Offset(), tc.want)
		}
	}

	// While filtering, q is text; enter keeps the filter, esc (outside) clears it.
	f := keys(m, "/", "q")
	if f.FilterText() != "q" {
		t.Errorf("filter text = %q, want q", f.FilterText())
	}
	f = keys(f, "enter")
	if _, cmd := f.Update(tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune("q")}); !isQuit(cmd) {
		t.Error("q after the filter was closed does not quit")
	}
	f = keys(m, "/", "m", "e", "t", "e", "r", "1", "enter")
	if got := len(f.state.Rows(f.filter, f.now)); got != 5 {
		t.Errorf("filter meter1: %d rows, want 5", got)
	}
	if got := keys(f, "esc").FilterText(); got != "" {
		t.Errorf("esc left filter %q", got)
	}
	if _, cmd := m.Update(tea.KeyMsg{Type: tea.KeyCtrlC}); !isQuit(cmd) {
		t.Error("ctrl+c does not quit")
	}
	if _, cmd := keys(m, "/").Update(tea.KeyMsg{Type: tea.KeyCtrlC}); !isQuit(cmd) {
		t.Error("ctrl+c while filtering does not quit")
	}
}

func isQuit(cmd tea.Cmd) bool {
	if cmd == nil {
		return false
	}
	_, ok := cmd().(tea.QuitMsg)
	return ok
}

// TestValuesFollowMessages checks that the value column follows the
// messages and that rows keep their order while values change.
func TestValuesFollowMessages(t *testing.T) {
	m := newTestModel(120, 40)
	at := t0.Add(6 * time.Second)
	m = step(m, MessagesMsg{batchMsg("modbus-line3", "meter1", at, at, false, good("voltage_l1", float32(240.5), "V"))})
	v := m.View()
	if !strings.Contains(v, "240.5") || strings.Contains(v, "232.1") {
		t.Errorf("view does not show the new value:\n%s", v)
	}
	// Rendering is deterministic: the same model gives the same screen.
	if v2 := m.View(); v2 != v {
		t.Error("View is not deterministic")
	}
}

func BenchmarkView(b *testing.B) {
	st := NewState("fieldgate", "gw1", nil, 0)
	for d := 0; d < 100; d++ {
		var rs []reading.Reading
		for i := 0; i < 100; i++ {
			rs = append(rs, good(fmt.Sprintf("tag%03d", i), float64(i)*1.5, "V"))
		}
		st.Apply(batchMsg("c", fmt.Sprintf("dev%03d", d), t0, t0, false, rs...))
	}
	m := NewModel(st, "tcp://x", t0, WithRenderer(plain()), WithSize(160, 50))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		_ = m.View()
	}
}
