package watch

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/charmbracelet/bubbles/help"
	"github.com/charmbracelet/bubbles/key"
	"github.com/charmbracelet/bubbles/textinput"
	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"
	"github.com/charmbracelet/x/ansi"

	"fieldgate/gateway/supervisor"
)

// TickInterval is how often the view refreshes ages and staleness when no
// message arrives.
const TickInterval = time.Second

// changedFor is how long a changed value stays highlighted.
const changedFor = 1500 * time.Millisecond

// MessagesMsg delivers MQTT messages to the model, in arrival order.
type MessagesMsg []Message

// TickMsg is the clock: it moves the model's now.
type TickMsg time.Time

// ConnMsg is the view's own broker connection.
type ConnMsg struct {
	Connected bool
	// Err is why the connection failed or was lost.
	Err string
}

// SupervisorMsg is a poll of the supervisor's /status.
type SupervisorMsg struct {
	Status supervisor.Status
	Err    error
	At     time.Time
}

// keyMap is the view's keys; bubbles/help prints them.
type keyMap struct {
	Up, Down, PageUp, PageDown, Top, Bottom, Filter, Clear, Quit key.Binding
}

func (k keyMap) ShortHelp() []key.Binding {
	return []key.Binding{k.Up, k.Down, k.PageDown, k.Filter, k.Clear, k.Quit}
}

func (k keyMap) FullHelp() [][]key.Binding { return [][]key.Binding{k.ShortHelp()} }

func defaultKeys() keyMap {
	return keyMap{
		Up:       key.NewBinding(key.WithKeys("up", "k"), key.WithHelp("↑/k", "up")),
		Down:     key.NewBinding(key.WithKeys("down", "j"), key.WithHelp("↓/j", "down")),
		PageUp:   key.NewBinding(key.WithKeys("pgup", "b"), key.WithHelp("PgUp", "page up")),
		PageDown: key.NewBinding(key.WithKeys("pgdown", " ", "f"), key.WithHelp("PgUp/PgDn", "page")),
		Top:      key.NewBinding(key.WithKeys("home", "g"), key.WithHelp("g", "top")),
		Bottom:   key.NewBinding(key.WithKeys("end", "G"), key.WithHelp("G", "bottom")),
		Filter:   key.NewBinding(key.WithKeys("/"), key.WithHelp("/", "filter")),
		Clear:    key.NewBinding(key.WithKeys("esc"), key.WithHelp("esc", "clear filter")),
		Quit:     key.NewBinding(key.WithKeys("q", "ctrl+c"), key.WithHelp("q", "quit")),
	}
}

type styles struct {
	title, header, faint, good, uncertain, bad, stale, changed lipgloss.Style
}

func newStyles(r *lipgloss.Renderer) styles {
	return styles{
		title:     r.NewStyle().Bold(true),
		header:    r.NewStyle().Bold(true).Underline(true),
		faint:     r.NewStyle().Faint(true),
		good:      r.NewStyle().Foreground(lipgloss.Color("2")),
		uncertain: r.NewStyle().Foreground(lipgloss.Color("3")),
		bad:       r.NewStyle().Foreground(lipgloss.Color("1")).Bold(true),
		stale:     r.NewStyle().Foreground(lipgloss.Color("3")),
		changed:   r.NewStyle().Bold(true).Foreground(lipgloss.Color("6")),
	}
}

// Model is the Bubble Tea model of the view. Its Update is pure: time comes
// from the messages (Message.At, TickMsg), never from the clock.
type Model struct {
	state  *State
	broker string
	keys   keyMap
	help   help.Model
	input  textinput.Model
	sty    styles

	now       time.Time
	conn      ConnMsg
	supErr    string
	filtering bool
	filter    Filter
	offset    int
	width     int
	height    int
}

// ModelOption changes a new Model.
type ModelOption func(*Model)

// WithRenderer sets the lipgloss renderer (colour profile); tests use one
// without colours. Default: lipgloss' default renderer (standard output).
func WithRenderer(r *lipgloss.Renderer) ModelOption {
	return func(m *Model) { m.sty = newStyles(r) }
}

// WithSize sets the terminal size before the first WindowSizeMsg.
func WithSize(width, height int) ModelOption {
	return func(m *Model) { m.width, m.height, m.help.Width = width, height, width }
}

// NewModel returns the view of state; broker is shown in the title. now is
// the model's clock until the first tick or message.
func NewModel(state *State, broker string, now time.Time, opts ...ModelOption) Model {
	in := textinput.New()
	in.Prompt = "/"
	in.Placeholder = "collector, device or tag (c:, d:, t: for one field)"
	in.CharLimit = 200
	m := Model{
		state: state, broker: broker, keys: defaultKeys(), help: help.New(), input: in,
		sty: newStyles(lipgloss.DefaultRenderer()), now: now,
	}
	for _, o := range opts {
		o(&m)
	}
	return m
}

// Init starts the clock.
func (m Model) Init() tea.Cmd { return tick() }

func tick() tea.Cmd {
	return tea.Tick(TickInterval, func(t time.Time) tea.Msg { return TickMsg(t) })
}

// Update applies one message: MQTT messages, ticks, connection and
// supervisor reports, window sizes and keys.
func (m Model) Update(msg tea.Msg) (tea.Model, tea.Cmd) {
	switch msg := msg.(type) {
	case MessagesMsg:
		for _, mm := range msg {
			m.state.Apply(mm)
			if mm.At.After(m.now) {
				m.now = mm.At
			}
		}
	case TickMsg:
		if t := time.Time(msg); t.After(m.now) {
			m.now = t
		}
		return m, tick()
	case ConnMsg:
		m.conn = msg
	case SupervisorMsg:
		m.supErr = ""
		if msg.Err != nil {
			m.supErr = msg.Err.Error()
		} else {
			m.state.ApplySupervisor(m.state.gateway, msg.Status)
		}
	case tea.WindowSizeMsg:
		m.width, m.height = msg.Width, msg.Height
		m.help.Width = msg.Width
	case tea.KeyMsg:
		return m.key(msg)
	}
	m.offset = m.clampOffset(m.offset)
	return m, nil
}

func (m Model) key(msg tea.KeyMsg) (tea.Model, tea.Cmd) {
	// Keys typed faster than the terminal is read ("/meter2") arrive as one
	// message: take them one at a time, so "/" still opens the filter.
	if msg.Type == tea.KeyRunes && len(msg.Runes) > 1 && !msg.Paste {
		var cmds []tea.Cmd
		var next tea.Model = m
		for _, r := range msg.Runes {
			var cmd tea.Cmd
			next, cmd = next.(Model).key(tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune{r}, Alt: msg.Alt})
			cmds = append(cmds, cmd)
		}
		return next, tea.Batch(cmds...)
	}
	if m.filtering {
		switch msg.Type {
		case tea.KeyCtrlC:
			return m, tea.Quit
		case tea.KeyEnter:
			m.filtering = false
			m.input.Blur()
			return m, nil
		case tea.KeyEsc:
			m.filtering = false
			m.input.Blur()
			m.input.SetValue("")
			m.filter = Filter{}
			return m, nil
		}
		var cmd tea.Cmd
		m.input, cmd = m.input.Update(msg)
		m.filter = ParseFilter(m.input.Value())
		m.offset = 0
		return m, cmd
	}
	page := max(m.pageSize()-1, 1)
	switch {
	case key.Matches(msg, m.keys.Quit):
		return m, tea.Quit
	case key.Matches(msg, m.keys.Filter):
		m.filtering = true
		return m, m.input.Focus()
	case key.Matches(msg, m.keys.Clear):
		m.input.SetValue("")
		m.filter = Filter{}
	case key.Matches(msg, m.keys.Up):
		m.offset--
	case key.Matches(msg, m.keys.Down):
		m.offset++
	case key.Matches(msg, m.keys.PageUp):
		m.offset -= page
	case key.Matches(msg, m.keys.PageDown):
		m.offset += page
	case key.Matches(msg, m.keys.Top):
		m.offset = 0
	case key.Matches(msg, m.keys.Bottom):
		m.offset = 1 << 30
	}
	m.offset = m.clampOffset(m.offset)
	return m, nil
}

// Offset is the index of the first row shown.
func (m Model) Offset() int { return m.offset }

// FilterText is the filter as typed.
func (m Model) FilterText() string { return m.input.Value() }

// clampOffset keeps the last page full: the offset runs from 0 to the
// number of rows minus the rows that fit.
func (m Model) clampOffset(o int) int {
	return max(min(o, m.state.Count(m.filter)-m.pageSize()), 0)
}

// pageSize is the number of tag rows that fit, or all of them when the
// height is unknown (a snapshot).
func (m Model) pageSize() int {
	if m.height <= 0 {
		return 1 << 30
	}
	return max(m.height-m.chromeLines(), 3)
}

// chromeLines counts the lines around the tag rows: title, blank, collector
// table (header and one line each), blank, the tag header, status and help.
func (m Model) chromeLines() int {
	return 1 + 1 + 1 + len(m.state.Collectors()) + 1 + 1 + 2
}

// View renders the screen.
func (m Model) View() string {
	var b strings.Builder
	b.WriteString(m.fit(m.titleLine()))
	b.WriteString("\n\n")
	b.WriteString(m.collectorTable())
	b.WriteString("\n\n")
	rows := m.state.Rows(m.filter, m.now)
	b.WriteString(m.tagTable(rows))
	b.WriteString("\n")
	b.WriteString(m.fit(m.statusLine(len(rows))))
	if m.height > 0 {
		b.WriteString("\n")
		b.WriteString(m.help.View(m.keys))
	}
	return b.String()
}

// fit cuts a line to the terminal's width, so that it never wraps and
// moves the rows.
func (m Model) fit(s string) string {
	if m.width <= 0 {
		return s
	}
	return ansi.Truncate(s, m.width, "…")
}

func (m Model) titleLine() string {
	parts := []string{m.sty.title.Render("fieldgate watch")}
	gws := m.state.Gateways()
	if len(gws) == 0 && m.state.gateway != "" {
		gws = []Gateway{{ID: m.state.gateway}}
	}
	for _, g := range gws {
		s := "gateway " + g.ID
		if g.State != "" {
			s += " " + m.stateStyle(g.State).Render(g.State)
		}
		if g.Version != "" {
			s += " (fieldgate " + g.Version + ")"
		}
		parts = append(parts, s)
	}
	conn := "connecting"
	switch {
	case m.conn.Connected:
		conn = m.sty.good.Render("connected")
	case m.conn.Err != "":
		conn = m.sty.bad.Render("disconnected: " + m.conn.Err)
	}
	parts = append(parts, "broker "+m.broker+" "+conn, m.now.Format("15:04:05"))
	return strings.Join(parts, " · ")
}

func (m Model) stateStyle(s string) lipgloss.Style {
	switch s {
	case "online", "running", "ok", "connected", "good":
		return m.sty.good
	case "starting", "backoff", "connecting", "uncertain", "degraded":
		return m.sty.uncertain
	case "offline", "crashloop", "exited", "error", "stopped", "bad":
		return m.sty.bad
	}
	return lipgloss.Style{}
}

// collectorTable is the collectors' states above the rows.
func (m Model) collectorTable() string {
	cs := m.state.Collectors()
	if len(cs) == 0 {
		return m.sty.faint.Render("no collector status yet (waiting for the retained status topics)")
	}
	multi := m.multiGateway()
	headers := []string{"COLLECTOR", "STATE", "RESTARTS", "QUEUE", "MQTT", "DEVICES"}
	data := make([][]string, 0, len(cs))
	for _, c := range cs {
		state, restarts := c.State, "-"
		if c.HasSup {
			restarts = fmt.Sprint(c.Restarts)
		}
		if state == "" {
			state = "-"
		}
		mqtt := c.MQTT
		if mqtt == "" {
			mqtt = c.Status
		}
		if mqtt == "" {
			mqtt = "-"
		}
		queue := "-"
		if c.Queue != nil {
			queue = fmt.Sprint(c.Queue.Pending)
			if lost := c.Queue.Dropped + c.Queue.Rejected; lost > 0 {
				queue += fmt.Sprintf(" (%d lost)", lost)
			}
		}
		data = append(data, []string{c.Name, state, restarts, queue, mqtt, deviceSummary(c.Devices)})
	}
	if multi {
		headers, data = withGateway(headers, data, func(i int) string { return cs[i].Gateway })
	}
	g := newGrid(headers, data)
	off := len(headers) - 6
	var b strings.Builder
	b.WriteString(g.line(headers, func(int) lipgloss.Style { return m.sty.header }, m.width))
	for _, row := range data {
		b.WriteString("\n")
		b.WriteString(g.line(row, func(col int) lipgloss.Style {
			switch col - off {
			case 1, 4:
				return m.stateStyle(strings.SplitN(row[col], ":", 2)[0])
			case 5:
				if strings.Contains(row[col], "error") {
					return m.sty.bad
				}
			}
			return lipgloss.Style{}
		}, m.width))
	}
	return b.String()
}

// withGateway puts a GATEWAY column first.
func withGateway(headers []string, data [][]string, gw func(int) string) ([]string, [][]string) {
	headers = append([]string{"GATEWAY"}, headers...)
	for i := range data {
		data[i] = append([]string{gw(i)}, data[i]...)
	}
	return headers, data
}

// deviceSummary is "N/M ok" followed by each device that is not ok.
func deviceSummary(devices map[string]string) string {
	if len(devices) == 0 {
		return "-"
	}
	names := make([]string, 0, len(devices))
	for d := range devices {
		names = append(names, d)
	}
	sort.Strings(names)
	ok := 0
	var bad []string
	for _, d := range names {
		if devices[d] == "ok" {
			ok++
			continue
		}
		bad = append(bad, d+" "+devices[d])
	}
	s := fmt.Sprintf("%d/%d ok", ok, len(devices))
	if len(bad) > 0 {
		s += "; " + strings.Join(bad, "; ")
	}
	return s
}

func (m Model) multiGateway() bool {
	if m.state.gateway != "" {
		return false
	}
	seen := map[string]bool{}
	for _, c := range m.state.Collectors() {
		seen[c.Gateway] = true
	}
	return len(seen) > 1
}

// grid lays out a table: column widths come from every row, so scrolling
// never moves a column; cells are styled, padded and separated by two spaces.
type grid struct {
	widths []int
}

func newGrid(headers []string, data [][]string) grid {
	w := make([]int, len(headers))
	for i, h := range headers {
		w[i] = cellWidth(h)
	}
	for _, row := range data {
		for i, c := range row {
			w[i] = max(w[i], cellWidth(c))
		}
	}
	return grid{widths: w}
}

// cellWidth is the width of s on a terminal; names and values are mostly
// ASCII, which needs no grapheme segmentation.
func cellWidth(s string) int {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return lipgloss.Width(s)
		}
	}
	return len(s)
}

// line renders one row, cut to maxWidth when that is positive.
func (g grid) line(cells []string, style func(col int) lipgloss.Style, maxWidth int) string {
	var b strings.Builder
	for i, c := range cells {
		b.WriteString(style(i).Render(c))
		if i < len(cells)-1 {
			b.WriteString(strings.Repeat(" ", g.widths[i]-cellWidth(c)+2))
		}
	}
	line := strings.TrimRight(b.String(), " ")
	if maxWidth > 0 {
		return ansi.Truncate(line, maxWidth, "…")
	}
	return line
}

// tagTable is the page of tag rows from the offset.
func (m Model) tagTable(rows []Row) string {
	if len(rows) == 0 {
		if m.state.Len() == 0 {
			return m.sty.faint.Render("no readings yet (waiting for data on " + m.state.Topics()[0] + ")")
		}
		return m.sty.faint.Render("no tag matches the filter")
	}
	headers := []string{"COLLECTOR", "DEVICE", "TAG", "VALUE", "UNIT", "QUALITY", "AGE", "NOTE"}
	data := make([][]string, 0, len(rows))
	for _, r := range rows {
		value := r.Value
		if value == "" && r.Quality == "bad" {
			value = "—"
		}
		var note []string
		if r.Offline {
			note = append(note, "offline")
		} else if r.Stale {
			note = append(note, "stale")
		}
		if r.Replayed {
			note = append(note, "replayed")
		}
		if r.Error != "" {
			note = append(note, r.Error)
		}
		data = append(data, []string{r.Collector, r.Device, r.Name, value, r.Unit, r.Quality, formatAge(r.Age), strings.Join(note, ": ")})
	}
	if m.multiGateway() {
		headers, data = withGateway(headers, data, func(i int) string { return rows[i].Gateway })
	}
	off := len(headers) - 8
	g := newGrid(headers, data)
	var b strings.Builder
	b.WriteString(g.line(headers, func(int) lipgloss.Style { return m.sty.header }, m.width))
	end := min(m.offset+m.pageSize(), len(rows))
	for i := m.offset; i < end; i++ {
		r := rows[i]
		b.WriteString("\n")
		b.WriteString(g.line(data[i], func(col int) lipgloss.Style {
			switch col - off {
			case 3:
				if r.Quality == "bad" {
					return m.sty.bad
				}
				if !r.Stale && !r.Changed.IsZero() && m.now.Sub(r.Changed) < changedFor {
					return m.sty.changed
				}
			case 5:
				return m.stateStyle(r.Quality)
			case 6, 7:
				if r.Stale {
					return m.sty.stale
				}
				if col-off == 7 && r.Error != "" {
					return m.sty.bad
				}
			}
			if r.Stale {
				return m.sty.faint
			}
			return lipgloss.Style{}
		}, m.width))
	}
	return b.String()
}

// formatAge is a short duration: 0.4s, 12s, 3m04s, 2h03m.
func formatAge(d time.Duration) string {
	switch {
	case d < 10*time.Second:
		return fmt.Sprintf("%.1fs", d.Seconds())
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	default:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
}

// statusLine says which rows are shown and how they are filtered.
func (m Model) statusLine(shown int) string {
	var parts []string
	if m.filtering {
		parts = append(parts, m.input.View())
	} else if v := m.input.Value(); v != "" {
		parts = append(parts, "filter /"+v)
	}
	rng := fmt.Sprintf("%d tags", shown)
	if shown != m.state.Len() {
		rng = fmt.Sprintf("%d of %d tags", shown, m.state.Len())
	}
	if ps := m.pageSize(); shown > ps {
		rng = fmt.Sprintf("rows %d–%d of %s", m.offset+1, min(m.offset+ps, shown), rng)
	}
	parts = append(parts, rng)
	if m.supErr != "" {
		parts = append(parts, m.sty.bad.Render("supervisor: "+m.supErr))
	}
	if m.state.Ignored > 0 {
		parts = append(parts, m.sty.faint.Render(fmt.Sprintf("%d messages not understood (last: %s)", m.state.Ignored, m.state.LastIgnored)))
	}
	return strings.Join(parts, " · ")
}
