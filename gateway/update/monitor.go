package update

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"fieldgate/gateway/supervisor"
	fgruntime "fieldgate/runtime"
)

// SupervisorStatus gives the supervisor's view of the collectors.
type SupervisorStatus interface {
	Status() supervisor.Status
}

// BrokerLink says whether the gateway's own MQTT connection is up.
type BrokerLink interface {
	Connected() bool
}

// ErrSlotChanged is wrapped by Monitor.Run when the active slot is no longer
// the one this supervisor was started from (an update switched, or a trial
// was rolled back): the process must exit so that its service manager starts
// the active slot's binary.
var ErrSlotChanged = errors.New("active firmware slot changed")

// Monitor runs in the supervisor: it reports the update state, watches for a
// switch of the active slot, and while the running version is on trial
// commits it once healthy or rolls it back. Create it with NewMonitor.
type Monitor struct {
	store      *Store
	slot       string
	confirm    time.Duration
	healthyFor time.Duration
	src        SupervisorStatus
	broker     BrokerLink
	images     ImagePruner
	ready      <-chan struct{}
	log        *slog.Logger
	interval   time.Duration
	now        func() time.Time
	changed    func()

	started time.Time
	pins    map[string]string
	obs     map[string]observation
	gwSince time.Time

	mu     sync.Mutex
	status *supervisor.UpdateStatus
	last   []byte // status as last reported, to signal changes only
}

// observation is when a collector's task was first seen healthy.
type observation struct {
	pid   uint32
	since time.Time
}

// MonitorOption configures a Monitor.
type MonitorOption func(*Monitor)

// WithImagePruner makes a commit prune the images neither slot pins.
func WithImagePruner(p ImagePruner) MonitorOption { return func(m *Monitor) { m.images = p } }

// WithReady delays the trial's evaluation until ready is closed (the
// supervisor has reconciled its collectors).
func WithReady(ready <-chan struct{}) MonitorOption { return func(m *Monitor) { m.ready = ready } }

// WithMonitorLogger sets the logger (default: discard).
func WithMonitorLogger(l *slog.Logger) MonitorOption { return func(m *Monitor) { m.log = l } }

// WithInterval sets how often the state is checked (default 1s).
func WithInterval(d time.Duration) MonitorOption { return func(m *Monitor) { m.interval = d } }

// WithClock replaces time.Now (tests).
func WithClock(now func() time.Time) MonitorOption { return func(m *Monitor) { m.now = now } }

// WithOnChange calls f whenever the reported status changes.
func WithOnChange(f func()) MonitorOption { return func(m *Monitor) { m.changed = f } }

// NewMonitor returns the monitor of a supervisor started from slot ("" when
// it runs from no slot: it then only reports and watches for an
// installation). confirmWithin and healthyFor are update.confirm_within and
// update.healthy_for.
func NewMonitor(store *Store, slot string, confirmWithin, healthyFor time.Duration, src SupervisorStatus, broker BrokerLink, opts ...MonitorOption) (*Monitor, error) {
	switch {
	case store == nil || src == nil || broker == nil:
		return nil, errors.New("update monitor: store, status source and broker link are required")
	case slot != "" && !validSlot(slot):
		return nil, fmt.Errorf("update monitor: invalid slot %q (valid: a, b)", slot)
	case healthyFor <= 0 || confirmWithin <= healthyFor:
		return nil, fmt.Errorf("update monitor: healthy_for %v must be positive and shorter than confirm_within %v", healthyFor, confirmWithin)
	}
	m := &Monitor{store: store, slot: slot, confirm: confirmWithin, healthyFor: healthyFor, src: src, broker: broker,
		log: slog.New(slog.DiscardHandler), interval: time.Second, now: time.Now, changed: func() {},
		obs: map[string]observation{}}
	for _, o := range opts {
		o(m)
	}
	if m.interval <= 0 {
		return nil, fmt.Errorf("update monitor: invalid interval %v", m.interval)
	}
	m.started = m.now()
	if slot != "" {
		if man, err := store.Manifest(slot); err == nil {
			m.pins = man.Pins()
		}
	}
	if st, err := store.State(); err == nil && st != nil {
		m.status = store.status(st)
	}
	return m, nil
}

// Status is the update state last seen (nil when nothing is installed, or
// on a nil Monitor).
func (m *Monitor) Status() *supervisor.UpdateStatus {
	if m == nil {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.status
}

// Run checks the state every interval until ctx is done (nil) or the active
// slot changes (an error wrapping ErrSlotChanged).
func (m *Monitor) Run(ctx context.Context) error {
	t := time.NewTicker(m.interval)
	defer t.Stop()
	for {
		if err := m.step(ctx); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// step is one check.
func (m *Monitor) step(ctx context.Context) error {
	st, err := m.store.State()
	if err != nil {
		m.log.Error("update state unreadable", "err", err)
		return nil
	}
	if st == nil {
		m.setStatus(nil)
		return nil
	}
	if st.Current != m.slot {
		return m.slotChanged(st)
	}
	us := m.store.status(st)
	if st.Trial != nil && m.isReady() {
		now := m.now()
		verdict, why := m.evaluate(now, st.Trial)
		switch verdict {
		case verdictCommit:
			ok, err := m.store.Commit(m.slot, now)
			if err != nil {
				m.log.Error("update commit failed; retrying", "version", st.Trial.Version, "err", err)
				break
			}
			if ok {
				m.log.Info("update committed", "version", st.Trial.Version, "from", st.Trial.From, "slot", m.slot)
				m.prune(ctx)
			}
			return m.step(ctx) // the state changed: report it
		case verdictRollBack:
			ok, err := m.store.RollBack(m.slot, why, now)
			if err != nil {
				m.log.Error("update rollback failed; retrying", "version", st.Trial.Version, "err", err)
				break
			}
			if ok {
				m.log.Warn("update rolled back", "version", st.Trial.Version, "to", st.Trial.From, "reason", why)
			}
			return m.step(ctx) // the slot changed: exit
		}
		deadline := m.started.Add(m.confirm)
		us.Trial.Deadline = &deadline
		us.Trial.Waiting = why
	}
	m.setStatus(us)
	return nil
}

func (m *Monitor) slotChanged(st *State) error {
	m.setStatus(m.store.status(st))
	why := fmt.Sprintf("slot %s is active now", st.Current)
	if l := st.Last; st.Trial == nil && l != nil && l.Result == supervisor.UpdateRolledBack {
		why = fmt.Sprintf("version %s rolled back to %s: %s", l.Version, l.From, l.Reason)
	} else if st.Trial != nil {
		why = fmt.Sprintf("version %s switched in (slot %s) on trial", st.Trial.Version, st.Current)
	}
	from := m.slot
	if from == "" {
		from = "none"
	}
	return fmt.Errorf("%w from %s to %s: %s", ErrSlotChanged, from, st.Current, why)
}

func (m *Monitor) isReady() bool {
	if m.ready == nil {
		return true
	}
	select {
	case <-m.ready:
		return true
	default:
		return false
	}
}

func (m *Monitor) setStatus(us *supervisor.UpdateStatus) {
	b, _ := json.Marshal(us)
	m.mu.Lock()
	m.status = us
	same := string(b) == string(m.last)
	m.last = b
	m.mu.Unlock()
	if !same {
		m.changed()
	}
}

func (m *Monitor) prune(ctx context.Context) {
	if m.images == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	deleted, err := m.store.PruneImages(ctx, m.images)
	if len(deleted) > 0 {
		m.log.Info("old images removed after commit", "images", strings.Join(deleted, " "))
	}
	if err != nil {
		m.log.Warn("image pruning incomplete", "err", err)
	}
}

type verdict int

const (
	verdictWait verdict = iota
	verdictCommit
	verdictRollBack
)

// collectorReport is the part of a collector's own status.json the trial
// reads (fieldgate/collectors/publish.FileStatus).
type collectorReport struct {
	State string `json:"state"`
	TS    int64  `json:"ts"`
	MQTT  struct {
		Connected bool   `json:"connected"`
		LastError string `json:"last_error"`
		Published uint64 `json:"published"`
	} `json:"mqtt"`
}

// evaluate decides the trial: commit once every collector has run and
// published, without a restart, for healthy_for and the gateway has been
// connected to the broker as long; roll back at once when a collector
// crash-loops, or when confirm_within has passed since this start; else wait,
// saying for what.
func (m *Monitor) evaluate(now time.Time, t *Trial) (verdict, string) {
	var waiting []string
	st := m.src.Status()
	for _, c := range st.Collectors {
		if c.State == supervisor.StateCrashLoop {
			code := -1
			if c.LastExit != nil {
				code = c.LastExit.Code
			}
			return verdictRollBack, fmt.Sprintf("collector %q crash-loops on version %s (%d restarts, last exit code %d)", c.Name, t.Version, c.Restarts, code)
		}
		if c.State == supervisor.StateStopped {
			continue // stopped on purpose; it cannot prove anything
		}
		if why := m.collectorWaiting(c, now); why != "" {
			waiting = append(waiting, why)
		}
	}
	if !m.broker.Connected() {
		m.gwSince = time.Time{}
		waiting = append(waiting, "the gateway is not connected to the broker")
	} else {
		if m.gwSince.IsZero() {
			m.gwSince = now
		}
		if d := now.Sub(m.gwSince); d < m.healthyFor {
			waiting = append(waiting, fmt.Sprintf("the gateway connected to the broker for %s of %s", d.Round(time.Second), m.healthyFor))
		}
	}
	why := strings.Join(waiting, "; ")
	switch {
	case len(waiting) == 0:
		return verdictCommit, ""
	case now.Sub(m.started) >= m.confirm:
		return verdictRollBack, fmt.Sprintf("version %s was not healthy within %s: %s", t.Version, m.confirm, why)
	}
	return verdictWait, why
}

// collectorWaiting says what c still lacks to count as healthy ("" when it
// has run and published for healthy_for).
func (m *Monitor) collectorWaiting(c supervisor.CollectorStatus, now time.Time) string {
	unhealthy := func(format string, args ...any) string {
		delete(m.obs, c.Name)
		return fmt.Sprintf("collector %q ", c.Name) + fmt.Sprintf(format, args...)
	}
	if c.State != supervisor.StateRunning {
		why := c.State
		if c.LastError != "" {
			why += ": " + c.LastError
		} else if c.LastExit != nil {
			why += fmt.Sprintf(" (last exit code %d)", c.LastExit.Code)
		}
		return unhealthy("is %s", why)
	}
	if name, err := fgruntime.NormalizeName(c.Image); err == nil {
		if pin, ok := m.pins[name]; ok && c.ImageDigest != pin {
			return unhealthy("runs image %s at %s, not at the pinned %s", name, shortDigest(c.ImageDigest), shortDigest(pin))
		}
	}
	var r collectorReport
	if len(c.Report) == 0 || json.Unmarshal(c.Report, &r) != nil {
		return unhealthy("has not reported yet")
	}
	if c.StartedAt != nil && r.TS < c.StartedAt.UnixMilli() {
		return unhealthy("has not reported since it started")
	}
	if !r.MQTT.Connected {
		why := "is not connected to the broker"
		if r.MQTT.LastError != "" {
			why += ": " + r.MQTT.LastError
		}
		return unhealthy("%s", why)
	}
	if r.MQTT.Published == 0 {
		return unhealthy("has not published yet")
	}
	o, ok := m.obs[c.Name]
	if !ok || o.pid != c.Pid {
		o = observation{pid: c.Pid, since: now}
		m.obs[c.Name] = o
	}
	if d := now.Sub(o.since); d < m.healthyFor {
		return fmt.Sprintf("collector %q healthy for %s of %s", c.Name, d.Round(time.Second), m.healthyFor)
	}
	return ""
}

func shortDigest(d string) string {
	if h, ok := strings.CutPrefix(d, "sha256:"); ok && len(h) > 12 {
		return "sha256:" + h[:12]
	}
	if d == "" {
		return "(none)"
	}
	return d
}
