// Package supervisor runs one container per configured collector and keeps
// it running: it reconciles gateway.yaml with the containers of the runtime
// (create missing, recreate changed, remove unconfigured, adopt running ones),
// restarts exited tasks per restart policy with exponential back-off, and
// reloads the config on request (SIGHUP) or when the file changes.
//
// The supervisor never sits in the data path: stopping it leaves the
// collectors running (unless WithStopCollectors), and starting it again adopts
// them without restarting their tasks.
package supervisor

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"fieldgate/gateway/config"
)

// Runtime is what the supervisor needs from the container runtime.
type Runtime interface {
	// Containers lists the containers of the runtime's namespace.
	Containers(ctx context.Context) ([]Container, error)
	// Start makes the container spec.Name exist with spec and its task run:
	// a container whose LabelSpecHash differs from spec's is replaced (its
	// task stopped first); an exited task is deleted and a new one started; a
	// running task of a container with the same hash is adopted as it is
	// (TaskInfo.Adopted).
	Start(ctx context.Context, spec Spec) (Task, error)
	// Remove stops the container's task (SIGTERM, then SIGKILL after a
	// deadline) and deletes the container; a missing container is no error.
	Remove(ctx context.Context, name string) error
}

// Container is a container as listed by Runtime.Containers.
type Container struct {
	Name    string
	Labels  map[string]string
	Running bool
	Pid     uint32
}

// Task is a collector's running task.
type Task interface {
	Info() TaskInfo
	// Wait blocks until the task exits or ctx is done (then it returns
	// ctx's error and leaves the task running).
	Wait(ctx context.Context) (Exit, error)
}

// TaskInfo describes a started or adopted task.
type TaskInfo struct {
	Pid         uint32
	ImageDigest string
	StartedAt   time.Time
	// Adopted is true when the task was already running with the same spec.
	Adopted bool
}

// Exit is how a task ended.
type Exit struct {
	Code int       `json:"code"`
	At   time.Time `json:"at"`
}

// Collector states shown in Status.
const (
	StateStarting  = "starting"
	StateRunning   = "running"
	StateBackoff   = "backoff"   // exited, restart pending
	StateCrashLoop = "crashloop" // like backoff, after CrashLoopCount fast exits in a row
	StateExited    = "exited"    // exited, policy says no restart
	StateStopped   = "stopped"   // found stopped at start, left so (unless-stopped, never)
	StateError     = "error"     // could not be started; retried with back-off
)

// CollectorStatus is the supervisor's view of one collector.
type CollectorStatus struct {
	Name        string     `json:"name"`
	Image       string     `json:"image"`
	ImageDigest string     `json:"image_digest"`
	State       string     `json:"state"`
	Restarts    int        `json:"restarts"`
	LastExit    *Exit      `json:"last_exit"`
	StartedAt   *time.Time `json:"started_at"`
	Pid         uint32     `json:"pid"`
	SpecHash    string     `json:"spec_hash"`
	LastError   string     `json:"last_error"`
	RestartAt   *time.Time `json:"restart_at,omitempty"`
	Restart     string     `json:"restart_policy"`
	Adopted     bool       `json:"adopted"`
	// Report is the collector's own DATA_DIR/status.json (state, MQTT
	// connection and last error, queue, devices): how a broker that refuses
	// the collector shows up here.
	Report       json.RawMessage `json:"collector_status,omitempty"`
	Recreations  int             `json:"-"`
	consecutive  int             // restarts since the last healthy run (back-off exponent)
	fastFailures int             // exits in a row within CrashLoopWindow of their start
}

// Status is a snapshot of the supervisor.
type Status struct {
	GatewayID       string            `json:"gateway_id"`
	Version         string            `json:"version"`
	ConfigPath      string            `json:"config"`
	Collectors      []CollectorStatus `json:"collectors"`
	LastReloadAt    *time.Time        `json:"last_reload_at,omitempty"`
	LastReloadError string            `json:"last_reload_error"`
	ReloadsOK       int               `json:"reloads_ok"`
	ReloadsFailed   int               `json:"reloads_failed"`
	// Update is the firmware update state (WithUpdateStatus); nil when no
	// firmware slot is installed.
	Update *UpdateStatus `json:"update,omitempty"`
}

// Option configures a Supervisor.
type Option func(*options)

type options struct {
	log            *slog.Logger
	backoffBase    time.Duration
	backoffMax     time.Duration
	healthyAfter   time.Duration
	crashLoopCount int
	crashWindow    time.Duration
	watchInterval  time.Duration
	stopCollectors bool
	stopTimeout    time.Duration
	load           func(path string) (*config.Config, error)
	version        string
	updateStatus   func() *UpdateStatus
}

// WithLogger sets the logger (default: discard).
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.log = l } }

// WithBackoff sets the restart back-off: base doubling up to max (default 1s, 60s),
// reset after a task ran healthy for healthyAfter (default 5m).
func WithBackoff(base, max, healthyAfter time.Duration) Option {
	return func(o *options) { o.backoffBase, o.backoffMax, o.healthyAfter = base, max, healthyAfter }
}

// WithCrashLoop sets when a collector shows StateCrashLoop: after count exits
// in a row each within window of its start (default 3 within 10s).
func WithCrashLoop(count int, window time.Duration) Option {
	return func(o *options) { o.crashLoopCount, o.crashWindow = count, window }
}

// WithWatchInterval sets how often the config file is checked for changes
// (default 1s; 0 disables the check, leaving Reload).
func WithWatchInterval(d time.Duration) Option { return func(o *options) { o.watchInterval = d } }

// WithStopCollectors makes Run remove every collector container when it
// returns (default: leave them running).
func WithStopCollectors(stop bool) Option { return func(o *options) { o.stopCollectors = stop } }

// WithLoader replaces config.Load for reloads (tests).
func WithLoader(load func(path string) (*config.Config, error)) Option {
	return func(o *options) { o.load = load }
}

// WithVersion sets the version shown in Status.
func WithVersion(v string) Option { return func(o *options) { o.version = v } }

// errList marks the failure to list the runtime's containers: fatal at start.
var errList = errors.New("list containers")

// Supervisor runs the collectors of a gateway config. Create it with New.
type Supervisor struct {
	rt   Runtime
	log  *slog.Logger
	opts options

	reloadReq chan struct{}
	changed   chan struct{}
	ready     chan struct{}
	reports   *reportReader

	mu            sync.Mutex
	cfg           *config.Config
	workers       map[string]*worker
	fileSum       [32]byte
	lastReloadAt  time.Time
	lastReloadErr string
	reloadsOK     int
	reloadsFailed int
}

type worker struct {
	spec   Spec
	cancel context.CancelFunc
	done   chan struct{}
	st     CollectorStatus // guarded by Supervisor.mu
}

// New validates its arguments and returns a supervisor for cfg (a config
// from config.Load; its Path is watched for changes).
func New(cfg *config.Config, rt Runtime, opts ...Option) (*Supervisor, error) {
	if cfg == nil {
		return nil, errors.New("supervisor: no config")
	}
	if rt == nil {
		return nil, errors.New("supervisor: no runtime")
	}
	o := options{
		log:            slog.New(slog.DiscardHandler),
		backoffBase:    time.Second,
		backoffMax:     time.Minute,
		healthyAfter:   5 * time.Minute,
		crashLoopCount: 3,
		crashWindow:    10 * time.Second,
		watchInterval:  time.Second,
		stopTimeout:    30 * time.Second,
		load:           func(path string) (*config.Config, error) { return config.Load(path) },
	}
	for _, opt := range opts {
		opt(&o)
	}
	switch {
	case o.backoffBase <= 0 || o.backoffMax < o.backoffBase:
		return nil, fmt.Errorf("supervisor: invalid back-off %v..%v", o.backoffBase, o.backoffMax)
	case o.crashLoopCount < 1:
		return nil, fmt.Errorf("supervisor: invalid crash-loop count %d", o.crashLoopCount)
	case o.watchInterval < 0:
		return nil, fmt.Errorf("supervisor: invalid watch interval %v", o.watchInterval)
	}
	s := &Supervisor{
		rt:        rt,
		log:       o.log,
		opts:      o,
		cfg:       cfg,
		workers:   map[string]*worker{},
		reloadReq: make(chan struct{}, 1),
		changed:   make(chan struct{}, 1),
		ready:     make(chan struct{}),
		reports:   newReportReader(o.log),
	}
	if cfg.Path != "" {
		if data, err := os.ReadFile(cfg.Path); err == nil {
			s.fileSum = sha256.Sum256(data)
		}
	}
	return s, nil
}

// Reload asks Run to reload the config file (SIGHUP).
func (s *Supervisor) Reload() {
	select {
	case s.reloadReq <- struct{}{}:
	default:
	}
}

// Ready is closed once Run has reconciled the containers with the config at
// start (every collector started, adopted or in back-off).
func (s *Supervisor) Ready() <-chan struct{} { return s.ready }

// Changed is signalled (coalesced) whenever the status changes.
func (s *Supervisor) Changed() <-chan struct{} { return s.changed }

func (s *Supervisor) notify() {
	select {
	case s.changed <- struct{}{}:
	default:
	}
}

// Status returns a snapshot, collectors sorted by name. The collectors' own
// reports are read after the lock is released, bounded in size and time.
func (s *Supervisor) Status() Status {
	s.mu.Lock()
	st := Status{
		GatewayID:       s.cfg.Gateway.ID,
		Version:         s.opts.version,
		ConfigPath:      s.cfg.Path,
		LastReloadError: s.lastReloadErr,
		ReloadsOK:       s.reloadsOK,
		ReloadsFailed:   s.reloadsFailed,
		Collectors:      make([]CollectorStatus, 0, len(s.workers)),
	}
	if !s.lastReloadAt.IsZero() {
		t := s.lastReloadAt
		st.LastReloadAt = &t
	}
	for _, w := range s.workers {
		c := w.st
		if c.LastExit != nil {
			e := *c.LastExit
			c.LastExit = &e
		}
		st.Collectors = append(st.Collectors, c)
	}
	sort.Slice(st.Collectors, func(i, j int) bool { return st.Collectors[i].Name < st.Collectors[j].Name })
	dirs := make(map[string]string, len(st.Collectors))
	for _, c := range st.Collectors {
		dirs[c.Name] = s.cfg.CollectorDir(c.Name)
	}
	s.mu.Unlock()
	reports := s.reports.readAll(dirs)
	for i := range st.Collectors {
		st.Collectors[i].Report = reports[st.Collectors[i].Name]
	}
	if s.opts.updateStatus != nil {
		st.Update = s.opts.updateStatus()
	}
	return st
}

// collectorStatusFile is what the collector's publisher writes in its
// DATA_DIR (publish.StatusFile; not imported, to keep the supervisor free of
// the collectors' MQTT stack).
const collectorStatusFile = "status.json"

// Config returns the config in effect.
func (s *Supervisor) Config() *config.Config {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cfg
}

// Run reconciles the containers with the config, supervises them and
// reloads the config on request or change, until ctx is done. It then leaves
// the collectors running (or removes them with WithStopCollectors, within a
// deadline) and returns. A runtime that cannot list its containers at start is
// an error.
func (s *Supervisor) Run(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	s.mu.Lock()
	cfg := s.cfg
	s.mu.Unlock()
	if err := s.apply(gctx, g, cfg, true); errors.Is(err, errList) {
		s.stopWorkers()
		_ = g.Wait()
		return err
	} else if err != nil {
		s.log.Error("reconcile at start incomplete", "err", err)
	}
	close(s.ready)
	g.Go(func() error {
		s.watch(gctx, g)
		s.stopWorkers()
		return nil
	})
	err := g.Wait()
	if s.opts.stopCollectors {
		stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.opts.stopTimeout)
		defer cancel()
		s.mu.Lock()
		names := make([]string, 0, len(s.workers))
		for name := range s.workers {
			names = append(names, name)
		}
		s.mu.Unlock()
		for _, name := range names {
			if rerr := s.rt.Remove(stopCtx, name); rerr != nil {
				s.log.Error("stop collector failed", "collector", name, "err", rerr)
				err = errors.Join(err, fmt.Errorf("stop collector %q: %w", name, rerr))
			} else {
				s.log.Info("collector stopped", "collector", name)
			}
		}
	}
	return err
}

// stopWorkers cancels every worker and waits for it; the tasks keep running.
func (s *Supervisor) stopWorkers() {
	s.mu.Lock()
	ws := make([]*worker, 0, len(s.workers))
	for _, w := range s.workers {
		ws = append(ws, w)
	}
	s.mu.Unlock()
	for _, w := range ws {
		w.cancel()
		<-w.done
	}
}

// watch serves reload requests and polls the config file until ctx is done.
func (s *Supervisor) watch(ctx context.Context, g *errgroup.Group) {
	var tick <-chan time.Time
	if s.opts.watchInterval > 0 && s.Config().Path != "" {
		t := time.NewTicker(s.opts.watchInterval)
		defer t.Stop()
		tick = t.C
	}
	var pending [32]byte // content seen changed on the last tick
	seen := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.reloadReq:
			s.reload(ctx, g, "signal")
		case <-tick:
			data, err := os.ReadFile(s.Config().Path)
			if err != nil {
				continue // a file being replaced; the next tick sees it
			}
			sum := sha256.Sum256(data)
			s.mu.Lock()
			same := sum == s.fileSum
			s.mu.Unlock()
			// Reload once the new content has been seen on two ticks in a row:
			// an editor writing the file in place is not caught half-way.
			switch {
			case same:
				seen = false
			case seen && sum == pending:
				seen = false
				s.reload(ctx, g, "file change")
			default:
				pending, seen = sum, true
			}
		}
	}
}

// reload loads the config file and applies it; an invalid file changes
// nothing and is shown as Status.LastReloadError.
func (s *Supervisor) reload(ctx context.Context, g *errgroup.Group, why string) {
	path := s.Config().Path
	data, _ := os.ReadFile(path)
	cfg, err := s.opts.load(path)
	s.mu.Lock()
	s.fileSum = sha256.Sum256(data) // a bad file is reported once, not every tick
	s.lastReloadAt = time.Now()
	if err != nil {
		s.lastReloadErr = err.Error()
		s.reloadsFailed++
		s.mu.Unlock()
		s.log.Error("config reload rejected, nothing changed", "config", path, "trigger", why, "err", err)
		s.notify()
		return
	}
	old := s.cfg
	s.mu.Unlock()
	for _, c := range restartOnly(old, cfg) {
		s.log.Warn("config setting changed; it takes effect when fieldgate restarts", "setting", c)
	}
	if err := s.apply(ctx, g, cfg, false); err != nil {
		s.mu.Lock()
		s.lastReloadErr = err.Error()
		s.reloadsFailed++
		s.mu.Unlock()
		s.log.Error("config reload failed", "config", path, "trigger", why, "err", err)
		s.notify()
		return
	}
	s.mu.Lock()
	s.lastReloadErr = ""
	s.reloadsOK++
	s.mu.Unlock()
	s.log.Info("config reloaded", "config", path, "trigger", why, "collectors", len(cfg.Collectors))
	s.notify()
}

// restartOnly names the settings that changed between a and b but are only
// read at start.
func restartOnly(a, b *config.Config) []string {
	var out []string
	check := func(name, x, y string) {
		if x != y {
			out = append(out, name)
		}
	}
	check("gateway.listen", a.Gateway.Listen, b.Gateway.Listen)
	// The collectors get the new values (their spec changes); the gateway's
	// own MQTT status connection keeps the old ones until restart.
	check("gateway.id (gateway status topic)", a.Gateway.ID, b.Gateway.ID)
	check("mqtt (gateway status connection)", mqttString(a.MQTT), mqttString(b.MQTT))
	check("runtime.address", a.Runtime.Address, b.Runtime.Address)
	check("runtime.namespace", a.Runtime.Namespace, b.Runtime.Namespace)
	check("runtime.images_dir", a.Runtime.ImagesDir, b.Runtime.ImagesDir)
	check("runtime.snapshotter", a.Runtime.Snapshotter, b.Runtime.Snapshotter)
	return out
}

// mqttString is m's settings without their file positions.
func mqttString(m config.MQTT) string {
	m.Pos, m.TLS.Pos = config.MQTT{}.Pos, config.TLS{}.Pos
	return fmt.Sprintf("%+v", m)
}

// apply reconciles the runtime with cfg: collectors no longer configured are
// removed (also containers labelled LabelManaged left from an earlier run),
// changed ones (spec hash differs) recreated, new ones started (or adopted
// when their task runs with the same spec), and unchanged ones left alone
// (their restart policy updated).
func (s *Supervisor) apply(ctx context.Context, g *errgroup.Group, cfg *config.Config, initial bool) error {
	existing, err := s.rt.Containers(ctx)
	if err != nil {
		return fmt.Errorf("%w: %w", errList, err)
	}
	byName := map[string]Container{}
	for _, c := range existing {
		byName[c.Name] = c
	}
	desired := map[string]*config.Collector{}
	for i := range cfg.Collectors {
		desired[cfg.Collectors[i].Name] = &cfg.Collectors[i]
	}

	s.mu.Lock()
	s.cfg = cfg
	var stale []*worker
	for name, w := range s.workers {
		if _, ok := desired[name]; !ok {
			stale = append(stale, w)
			delete(s.workers, name)
		}
	}
	s.mu.Unlock()

	var errs []error
	for _, w := range stale {
		w.cancel()
		<-w.done
		if err := s.rt.Remove(ctx, w.spec.Name); err != nil {
			errs = append(errs, fmt.Errorf("remove collector %q: %w", w.spec.Name, err))
			continue
		}
		s.log.Info("collector removed", "collector", w.spec.Name)
	}
	// Containers the supervisor made for collectors no longer configured
	// (removed while it was not running).
	for _, c := range existing {
		if _, ok := desired[c.Name]; ok || c.Labels[LabelManaged] != "true" {
			continue
		}
		s.mu.Lock()
		_, active := s.workers[c.Name]
		s.mu.Unlock()
		if active {
			continue
		}
		if err := s.rt.Remove(ctx, c.Name); err != nil {
			errs = append(errs, fmt.Errorf("remove collector %q: %w", c.Name, err))
			continue
		}
		s.log.Info("collector removed: no longer configured", "collector", c.Name)
	}

	for _, col := range cfg.Collectors {
		spec := BuildSpec(cfg, &col)
		hash := spec.Labels[LabelSpecHash]
		s.mu.Lock()
		w := s.workers[col.Name]
		if w != nil && w.spec.Labels[LabelSpecHash] == hash {
			w.st.Restart = col.Restart
			s.mu.Unlock()
			continue
		}
		s.mu.Unlock()
		var prev *CollectorStatus
		if w != nil {
			s.log.Info("collector spec changed, recreating", "collector", col.Name)
			w.cancel()
			<-w.done
			st := w.st
			prev = &st
		}
		leaveStopped := false
		if c, ok := byName[col.Name]; initial && ok && !c.Running && c.Labels[LabelSpecHash] == hash &&
			(col.Restart == config.RestartUnlessStopped || col.Restart == config.RestartNever) {
			leaveStopped = true
		}
		s.startWorker(ctx, g, spec, col, prev, leaveStopped)
	}
	s.notify()
	return errors.Join(errs...)
}

func (s *Supervisor) startWorker(ctx context.Context, g *errgroup.Group, spec Spec, col config.Collector, prev *CollectorStatus, leaveStopped bool) {
	wctx, cancel := context.WithCancel(ctx)
	w := &worker{
		spec:   spec,
		cancel: cancel,
		done:   make(chan struct{}),
		st: CollectorStatus{
			Name:     col.Name,
			Image:    col.Image,
			State:    StateStarting,
			SpecHash: spec.Labels[LabelSpecHash],
			Restart:  col.Restart,
		},
	}
	if prev != nil {
		w.st.Restarts = prev.Restarts
		w.st.LastExit = prev.LastExit
		w.st.Recreations = prev.Recreations + 1
	}
	if leaveStopped {
		w.st.State = StateStopped
	}
	s.mu.Lock()
	s.workers[col.Name] = w
	s.mu.Unlock()
	g.Go(func() error {
		defer close(w.done)
		if leaveStopped {
			s.log.Info("collector left stopped by its restart policy", "collector", col.Name, "restart", col.Restart)
			return nil
		}
		s.supervise(wctx, w)
		return nil
	})
}

// update changes w's status under the lock and signals the change.
func (s *Supervisor) update(w *worker, f func(st *CollectorStatus)) {
	s.mu.Lock()
	f(&w.st)
	s.mu.Unlock()
	s.notify()
}

// supervise starts w's task, waits for it to exit and restarts it per
// policy with back-off, until ctx is done (the task is left running).
func (s *Supervisor) supervise(ctx context.Context, w *worker) {
	log := s.log.With("collector", w.spec.Name)
	for {
		task, err := s.start(ctx, w)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			log.Error("collector start failed", "err", err)
			if !s.pause(ctx, w, 0, false, err) {
				return
			}
			continue
		}
		info := task.Info()
		started := info.StartedAt
		if started.IsZero() {
			started = time.Now()
		}
		s.update(w, func(st *CollectorStatus) {
			st.State = StateRunning
			st.Pid = info.Pid
			st.ImageDigest = info.ImageDigest
			st.StartedAt = &started
			st.Adopted = info.Adopted
			st.LastError = ""
			st.RestartAt = nil
		})
		if info.Adopted {
			log.Info("collector adopted", "pid", info.Pid)
		} else {
			log.Info("collector started", "pid", info.Pid, "image_digest", info.ImageDigest)
		}

		exit, err := task.Wait(ctx)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			// The task could not be watched (e.g. containerd restarted): look
			// again after a pause rather than spinning.
			log.Error("collector wait failed", "err", err)
			if !s.pause(ctx, w, 0, false, fmt.Errorf("wait: %w", err)) {
				return
			}
			continue
		}
		if exit.At.IsZero() {
			exit.At = time.Now()
		}
		ran := exit.At.Sub(started)
		s.mu.Lock()
		policy := w.st.Restart
		s.mu.Unlock()
		log.Warn("collector exited", "code", exit.Code, "ran", ran.Round(time.Millisecond), "restart", policy)
		if !ShouldRestart(policy, exit.Code) {
			s.update(w, func(st *CollectorStatus) {
				st.State = StateExited
				st.Pid = 0
				st.LastExit = &exit
			})
			<-ctx.Done()
			return
		}
		s.update(w, func(st *CollectorStatus) { st.LastExit = &exit })
		if !s.pause(ctx, w, ran, true, nil) {
			return
		}
		s.update(w, func(st *CollectorStatus) { st.Restarts++ })
	}
}

// start writes the collector's files and starts (or adopts) its task.
func (s *Supervisor) start(ctx context.Context, w *worker) (Task, error) {
	if err := writeFiles(&w.spec); err != nil {
		return nil, err
	}
	return s.rt.Start(ctx, w.spec)
}

// pause waits out the back-off before the next start and updates the state;
// ran is how long the last task ran (exited says there was one). It returns
// false when ctx is done.
func (s *Supervisor) pause(ctx context.Context, w *worker, ran time.Duration, exited bool, cause error) bool {
	s.mu.Lock()
	st := &w.st
	if exited && ran >= s.opts.healthyAfter {
		st.consecutive = 0
	}
	if exited && ran < s.opts.crashWindow || !exited {
		st.fastFailures++
	} else {
		st.fastFailures = 0
	}
	delay := BackoffDelay(st.consecutive, s.opts.backoffBase, s.opts.backoffMax)
	st.consecutive++
	at := time.Now().Add(delay)
	st.RestartAt = &at
	st.Pid = 0
	switch {
	case cause != nil:
		st.State = StateError
		st.LastError = cause.Error()
	case st.fastFailures >= s.opts.crashLoopCount:
		st.State = StateCrashLoop
	default:
		st.State = StateBackoff
	}
	state := st.State
	s.mu.Unlock()
	s.notify()
	if state == StateCrashLoop {
		s.log.Warn("collector crash-looping", "collector", w.spec.Name, "restart_in", delay)
	}
	t := time.NewTimer(delay)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// ShouldRestart applies a restart policy to an exit code: always and
// unless-stopped restart every exit, on-failure a non-zero one, never none.
func ShouldRestart(policy string, code int) bool {
	switch policy {
	case config.RestartAlways, config.RestartUnlessStopped:
		return true
	case config.RestartOnFailure:
		return code != 0
	}
	return false
}

// BackoffDelay is the wait before the restart that follows n restarts without
// a healthy run: base doubling per restart, capped at max.
func BackoffDelay(n int, base, max time.Duration) time.Duration {
	d := base
	for i := 0; i < n; i++ {
		d *= 2
		if d >= max {
			return max
		}
	}
	if d > max {
		return max
	}
	return d
}
