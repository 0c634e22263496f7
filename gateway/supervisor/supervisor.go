// Package supervisor runs one container per configured collector and keeps
// it running: it reconciles gateway.yaml with the containers of the runtime
// (create missing, recreate changed, remove unconfigured, adopt running ones),
// restarts exited tasks per restart policy with exponential back-off, and
// reloads the config on request (SIGHUP) or when the file changes.
//
// The supervisor never sits in the data path: stopping it leaves the
// collectors running (unless WithStopCollectors), and starting it again adopts
// them without restarting their tasks.
//
// Restart policies mean what they mean in Docker (see planAtStart), and what
// must outlive the supervisor — an operator's stop, restart counts, the
// crash-loop back-off — is kept in a state file of its own (StateDirName). A
// collector's identity (Identity: image digest, secret files, device nodes) is
// resolved at every start, reload and every few seconds; a change recreates
// the collector, one at a time, its old task stopped before the new one starts.
package supervisor

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"fieldgate/gateway/config"
)

// Runtime is what the supervisor needs from the container runtime. It must
// also be an ImageResolver unless WithImages is given.
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
	// Exited is true when the container has a task that has exited, with
	// ExitCode and ExitedAt. Neither Running nor Exited: the container has no
	// task, as after a reboot (containerd keeps containers, not tasks).
	Exited   bool
	ExitCode int
	ExitedAt time.Time
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
	StateExited    = "exited"    // not running, and the restart policy does not restart it
	StateStopped   = "stopped"   // stopped by an operator (fieldgate stop)
	StateError     = "error"     // could not be started; retried with back-off
)

// CollectorStatus is the supervisor's view of one collector.
type CollectorStatus struct {
	Name  string `json:"name"`
	Image string `json:"image"`
	// ImageDigest is the digest the running task's container was created
	// from; ConfiguredDigest the one the image tag points to now (empty when
	// the tag is absent); DigestMatches says the task runs the configured one.
	ImageDigest      string `json:"image_digest"`
	ConfiguredDigest string `json:"configured_digest"`
	DigestMatches    bool   `json:"digest_matches"`
	// Devices are the nodes the configured device paths led to when the
	// task was last started.
	Devices   []DeviceNode `json:"devices,omitempty"`
	State     string       `json:"state"`
	Restarts  int          `json:"restarts"`
	LastExit  *Exit        `json:"last_exit"`
	StartedAt *time.Time   `json:"started_at"`
	Pid       uint32       `json:"pid"`
	SpecHash  string       `json:"spec_hash"`
	LastError string       `json:"last_error"`
	RestartAt *time.Time   `json:"restart_at,omitempty"`
	Restart   string       `json:"restart_policy"`
	Adopted   bool         `json:"adopted"`
	// Report is the collector's own DATA_DIR/status.json (state, MQTT
	// connection and last error, queue, devices): how a broker that refuses
	// the collector shows up here.
	Report json.RawMessage `json:"collector_status,omitempty"`
	// StoppedAt is when an operator stopped the collector (StateStopped).
	StoppedAt   *time.Time `json:"stopped_at,omitempty"`
	Recreations int        `json:"-"`
	// Restarts, LastExit, the two counters below and an operator's stop
	// survive a supervisor restart (the state file).
	consecutive     int  // restarts since the last healthy run (back-off exponent)
	fastFailures    int  // exits in a row within CrashLoopWindow of their start
	operatorStopped bool // fieldgate stop
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
	images         ImageResolver
	identityEvery  time.Duration
	startTimeout   time.Duration
	stateDir       string
	prune          PruneFunc
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

// WithImages sets how image tags resolve to digests (default: the Runtime,
// which must then implement ImageResolver).
func WithImages(r ImageResolver) Option { return func(o *options) { o.images = r } }

// WithIdentityInterval sets how often the identity of every running
// collector is resolved again (default 5s; 0 disables the check, leaving the
// resolution at start and reload).
func WithIdentityInterval(d time.Duration) Option { return func(o *options) { o.identityEvery = d } }

// WithStateDir sets the directory of the supervisor's state file (default
// {gateway.data_dir}/supervisor). No container may be able to write it.
func WithStateDir(dir string) Option { return func(o *options) { o.stateDir = dir } }

// PruneFunc removes the images no collector needs any more; inUse are the
// digests that must stay (every collector's configured and running digest).
type PruneFunc func(ctx context.Context, inUse []string) error

// WithPrune sets the function called once every collector runs the digest
// its tag points to (or is stopped or exited), each time that set of
// digests changes: after an upgrade, the old images go once the new ones
// run. Default: none (nothing is pruned). A caller that must wait for more
// (an update's commit) decides inside prune.
func WithPrune(prune PruneFunc) Option { return func(o *options) { o.prune = prune } }

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

	// reconcileMu serialises whatever replaces workers: apply (start and
	// reload), the identity check and operator stops and starts.
	reconcileMu sync.Mutex
	// startSem serialises the runtime's Start and Remove calls: collectors are
	// (re)created one at a time, and a serial line's old owner is stopped
	// before its new owner is created.
	startSem chan struct{}

	store     *stateStore
	saveMu    sync.Mutex
	saveErr   string      // last state-file error logged (logged once)
	persisted persisted   // as loaded at New; read by the first apply
	pruned    string      // the in-use digest set last pruned for
	running   *runningCtx // set while Run runs

	mu            sync.Mutex
	cfg           *config.Config
	workers       map[string]*worker
	fileSum       [32]byte
	lastReloadAt  time.Time
	lastReloadErr string
	reloadsOK     int
	reloadsFailed int
}

// runningCtx is what operator commands need from a running Run.
type runningCtx struct {
	ctx context.Context
	g   *errgroup.Group
}

type worker struct {
	// base is the spec from the config (BuildSpec); spec is base with the
	// identity it was last started with, guarded by Supervisor.mu.
	base   Spec
	spec   Spec
	col    config.Collector
	cancel context.CancelFunc
	done   chan struct{}
	// attempted is closed once the worker's first start attempt shows in its
	// status (running, or error with a back-off), or at once when it leaves
	// the collector stopped.
	attempted chan struct{}
	st        CollectorStatus // guarded by Supervisor.mu
	warned    string          // configured digest a mismatch was last logged for
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
		identityEvery:  5 * time.Second,
		startTimeout:   2 * time.Minute,
		stateDir:       filepath.Join(cfg.Gateway.DataDir, StateDirName),
	}
	for _, opt := range opts {
		opt(&o)
	}
	if o.images == nil {
		im, ok := rt.(ImageResolver)
		if !ok {
			return nil, errors.New("supervisor: the runtime does not resolve image digests (no ImageDigest); give WithImages")
		}
		o.images = im
	}
	switch {
	case o.backoffBase <= 0 || o.backoffMax < o.backoffBase:
		return nil, fmt.Errorf("supervisor: invalid back-off %v..%v", o.backoffBase, o.backoffMax)
	case o.crashLoopCount < 1:
		return nil, fmt.Errorf("supervisor: invalid crash-loop count %d", o.crashLoopCount)
	case o.watchInterval < 0:
		return nil, fmt.Errorf("supervisor: invalid watch interval %v", o.watchInterval)
	case o.identityEvery < 0:
		return nil, fmt.Errorf("supervisor: invalid identity interval %v", o.identityEvery)
	case !filepath.IsAbs(o.stateDir):
		return nil, fmt.Errorf("supervisor: state dir %q must be an absolute path", o.stateDir)
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
		startSem:  make(chan struct{}, 1),
		store:     newStateStore(o.stateDir),
		reports:   newReportReader(o.log),
	}
	p, err := s.store.load()
	if err != nil {
		// Never fatal: the collectors run with fresh counters, and the file
		// is rewritten at the next change.
		s.log.Error("supervisor state unreadable; starting from an empty state", "err", err)
	}
	s.persisted = p
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
	s.running = &runningCtx{ctx: gctx, g: g}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.running = nil
		s.mu.Unlock()
	}()
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
	if s.opts.identityEvery > 0 {
		g.Go(func() error {
			s.watchIdentities(gctx, g)
			return nil
		})
	}
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
// changed ones (spec or identity hash differs) recreated, new ones started
// (or adopted when their task runs with the same spec), and unchanged ones
// left alone (their restart policy updated). At start (initial), each
// collector found is handled by its restart policy (planAtStart).
func (s *Supervisor) apply(ctx context.Context, g *errgroup.Group, cfg *config.Config, initial bool) error {
	s.reconcileMu.Lock()
	defer s.reconcileMu.Unlock()
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
		if err := s.remove(ctx, w.base.Name); err != nil {
			errs = append(errs, fmt.Errorf("remove collector %q: %w", w.base.Name, err))
			continue
		}
		s.log.Info("collector removed", "collector", w.base.Name)
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
		if err := s.remove(ctx, c.Name); err != nil {
			errs = append(errs, fmt.Errorf("remove collector %q: %w", c.Name, err))
			continue
		}
		s.log.Info("collector removed: no longer configured", "collector", c.Name)
	}

	type pending struct {
		base Spec
		col  config.Collector
		prev *CollectorStatus
		id   Identity
		plan startPlan
	}
	var starts []pending
	for _, col := range cfg.Collectors {
		base := BuildSpec(cfg, &col)
		s.mu.Lock()
		w := s.workers[col.Name]
		s.mu.Unlock()
		if w != nil {
			s.mu.Lock()
			prevID := w.spec.Identity
			s.mu.Unlock()
			id, _ := ResolveIdentity(ctx, s.opts.images, &base)
			spec := base.WithIdentity(MergeIdentity(prevID, id))
			s.mu.Lock()
			same := w.spec.Labels[LabelSpecHash] == spec.Labels[LabelSpecHash]
			if same {
				w.st.Restart = col.Restart
				w.col = col
			}
			s.mu.Unlock()
			if same {
				continue
			}
			w.cancel()
			<-w.done
			s.mu.Lock()
			st := w.st
			s.mu.Unlock()
			if st.State == StateStopped || st.State == StateExited {
				s.log.Info("collector spec changed; it stays down until started", "collector", col.Name, "state", st.State)
			} else {
				s.log.Info("collector spec changed, recreating", "collector", col.Name)
			}
			// The old owner of a device lets go of it before any collector
			// starts: a device moved from one collector to another never has
			// two owners.
			if len(w.base.Devices) > 0 && st.State != StateStopped && st.State != StateExited {
				if err := s.remove(ctx, col.Name); err != nil {
					errs = append(errs, fmt.Errorf("remove collector %q: %w", col.Name, err))
				}
			}
			plan := startPlan{}
			if st.State == StateStopped || st.State == StateExited {
				plan = startPlan{leave: true, state: st.State}
			}
			starts = append(starts, pending{base: base, col: col, prev: &st, id: prevID, plan: plan})
			continue
		}
		p := s.persisted.Collectors[col.Name]
		var id Identity
		var prev *CollectorStatus
		if p != nil && initial {
			prev = restoredStatus(p)
			if p.Identity != nil {
				id = *p.Identity
			}
		}
		plan := startPlan{}
		if initial {
			var c *Container
			if found, ok := byName[col.Name]; ok {
				c = &found
			}
			plan = planAtStart(col.Restart, c, p, time.Now(), s.opts.backoffMax)
		}
		starts = append(starts, pending{base: base, col: col, prev: prev, id: id, plan: plan})
	}
	for _, p := range starts {
		if p.plan.stopRunning {
			s.log.Info("collector stopped by an operator but running: stopping it", "collector", p.col.Name)
			if err := s.remove(ctx, p.col.Name); err != nil {
				errs = append(errs, fmt.Errorf("stop collector %q: %w", p.col.Name, err))
			}
		}
		s.startWorker(ctx, g, p.base, p.id, p.col, p.prev, p.plan)
	}
	s.persist()
	s.notify()
	return errors.Join(errs...)
}

// restoredStatus is the status a collector had when the supervisor last
// recorded it.
func restoredStatus(p *persistedCollector) *CollectorStatus {
	return &CollectorStatus{
		State:           p.State,
		Restarts:        p.Restarts,
		LastExit:        p.LastExit,
		RestartAt:       p.RestartAt,
		StoppedAt:       p.StoppedAt,
		Recreations:     p.Recreations,
		consecutive:     p.Consecutive,
		fastFailures:    p.FastFailures,
		operatorStopped: p.OperatorStopped,
	}
}

// remove stops and deletes a collector's container, one runtime change at a
// time (see startSem).
func (s *Supervisor) remove(ctx context.Context, name string) error {
	select {
	case s.startSem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-s.startSem }()
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.opts.startTimeout)
	defer cancel()
	return s.rt.Remove(rctx, name)
}

// startWorker starts supervising collector col (base its spec from the
// config, id the identity it last ran with) per plan; prev carries the
// counters of the worker it replaces, or of the last supervisor run.
func (s *Supervisor) startWorker(ctx context.Context, g *errgroup.Group, base Spec, id Identity, col config.Collector, prev *CollectorStatus, plan startPlan) *worker {
	wctx, cancel := context.WithCancel(ctx)
	w := &worker{
		base:      base,
		spec:      base.WithIdentity(id),
		col:       col,
		cancel:    cancel,
		done:      make(chan struct{}),
		attempted: make(chan struct{}),
		st: CollectorStatus{
			Name:     col.Name,
			Image:    col.Image,
			State:    StateStarting,
			Restart:  col.Restart,
			SpecHash: base.WithIdentity(id).Labels[LabelSpecHash],
		},
	}
	if prev != nil {
		w.st.Restarts = prev.Restarts
		w.st.LastExit = prev.LastExit
		w.st.Recreations = prev.Recreations
		w.st.consecutive = prev.consecutive
		w.st.fastFailures = prev.fastFailures
		w.st.operatorStopped = prev.operatorStopped
		w.st.StoppedAt = prev.StoppedAt
		w.st.ConfiguredDigest = prev.ConfiguredDigest
	}
	if plan.delay > 0 && prev != nil {
		w.st.State, w.st.RestartAt = prev.State, prev.RestartAt
	}
	if plan.leave {
		w.st.State = plan.state
		if plan.lastExit != nil {
			w.st.LastExit = plan.lastExit
		}
		close(w.attempted)
	}
	s.mu.Lock()
	s.workers[col.Name] = w
	s.mu.Unlock()
	g.Go(func() error {
		defer close(w.done)
		if plan.leave {
			s.log.Info("collector left stopped", "collector", col.Name, "restart", col.Restart, "state", plan.state)
			return nil
		}
		s.supervise(wctx, w, plan)
		return nil
	})
	return w
}

// update changes w's status under the lock, records what must survive a
// restart and signals the change.
func (s *Supervisor) update(w *worker, f func(st *CollectorStatus)) {
	s.mu.Lock()
	f(&w.st)
	s.mu.Unlock()
	s.persist()
	s.notify()
}

// supervise starts w's task, waits for it to exit and restarts it per
// policy with back-off, until ctx is done (the task is left running). plan
// says what happened while the supervisor was away.
func (s *Supervisor) supervise(ctx context.Context, w *worker, plan startPlan) {
	log := s.log.With("collector", w.base.Name)
	attempted := sync.OnceFunc(func() { close(w.attempted) })
	defer attempted()
	if plan.died {
		exit := plan.lastExit
		s.update(w, func(st *CollectorStatus) {
			if exit != nil {
				st.LastExit = exit
			}
		})
		log.Warn("collector found not running; restarting by its policy", "restart", w.col.Restart, "last_exit", exit)
	}
	if plan.delay > 0 {
		log.Info("collector back-off continues from before the supervisor restart", "restart_in", plan.delay)
		if !sleep(ctx, plan.delay) {
			return
		}
	}
	if plan.died {
		s.update(w, func(st *CollectorStatus) { st.Restarts++ })
	}
	for {
		task, err := s.start(ctx, w)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			log.Error("collector start failed", "err", err)
			delay := s.backoff(w, 0, false, err)
			attempted()
			if !sleep(ctx, delay) {
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
			st.DigestMatches = info.ImageDigest != "" && info.ImageDigest == st.ConfiguredDigest
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
		// Only now: whoever waits on attempted reads the state this start left.
		attempted()

		exit, err := task.Wait(ctx)
		if ctx.Err() != nil {
			return
		}
		// lost: the runtime kept no task and no exit status for it.
		lost := false
		if err != nil {
			// The task could not be watched (containerd restarted or went
			// away). Once the runtime answers again, what became of the task
			// meanwhile decides, as if the supervisor had watched it: a task
			// that still runs is adopted again, an exit goes by the policy.
			log.Error("collector wait failed", "err", err)
			c, ok := s.reconnect(ctx, w, err)
			if !ok {
				return
			}
			switch {
			case c != nil && c.Running:
				continue // start adopts it
			case c != nil && c.Exited:
				exit = Exit{Code: c.ExitCode, At: c.ExitedAt}
			default:
				lost = true
			}
		}
		if exit.At.IsZero() {
			exit.At = time.Now()
		}
		ran := exit.At.Sub(started)
		s.mu.Lock()
		policy := w.st.Restart
		s.mu.Unlock()
		restart := ShouldRestart(policy, exit.Code)
		if lost {
			// As after a reboot (planAtStart): no exit to judge by.
			restart = policy != config.RestartNever
			log.Warn("collector task lost by the runtime", "restart", policy)
		} else {
			log.Warn("collector exited", "code", exit.Code, "ran", ran.Round(time.Millisecond), "restart", policy)
		}
		if !restart {
			s.update(w, func(st *CollectorStatus) {
				st.State = StateExited
				st.Pid = 0
				st.DigestMatches = false
				if !lost {
					st.LastExit = &exit
				}
			})
			<-ctx.Done()
			return
		}
		if !lost {
			s.update(w, func(st *CollectorStatus) { st.LastExit = &exit })
		}
		if !s.pause(ctx, w, ran, true, nil) {
			return
		}
		s.update(w, func(st *CollectorStatus) { st.Restarts++ })
	}
}

// reconnect follows a Wait that failed with cause: with back-off (the
// collector in StateError meanwhile) until the runtime lists its containers
// again, then it returns the collector's container, nil if it has none. It
// returns false when ctx is done.
func (s *Supervisor) reconnect(ctx context.Context, w *worker, cause error) (*Container, bool) {
	for {
		if !s.pause(ctx, w, 0, false, fmt.Errorf("wait: %w", cause)) {
			return nil, false
		}
		lctx, cancel := context.WithTimeout(ctx, s.opts.startTimeout)
		cs, err := s.rt.Containers(lctx)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return nil, false
			}
			cause = err
			continue
		}
		for i := range cs {
			if cs[i].Name == w.base.Name {
				return &cs[i], true
			}
		}
		return nil, true
	}
}

// start resolves the collector's identity, writes its files and starts (or
// adopts) its task. The runtime call holds startSem and is not cancelled
// with ctx (only bounded by startTimeout): a start stopped half-way would
// leave a task nobody owns.
func (s *Supervisor) start(ctx context.Context, w *worker) (Task, error) {
	s.mu.Lock()
	base, prev := w.base, w.spec.Identity
	s.mu.Unlock()
	id, rerr := ResolveIdentity(ctx, s.opts.images, &base)
	spec := base.WithIdentity(MergeIdentity(prev, id))
	s.mu.Lock()
	w.spec = spec
	w.st.SpecHash = spec.Labels[LabelSpecHash]
	w.st.ConfiguredDigest = id.ImageDigest
	w.st.Devices = spec.Identity.Devices
	s.mu.Unlock()
	if err := writeFiles(&spec); err != nil {
		return nil, err
	}
	select {
	case s.startSem <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-s.startSem }()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.opts.startTimeout)
	defer cancel()
	task, err := s.rt.Start(sctx, spec)
	if err != nil && rerr != nil {
		err = fmt.Errorf("%w (identity: %v)", err, rerr)
	}
	return task, err
}

// pause records the back-off before the next start and waits it out; ran is
// how long the last task ran (exited says there was one). It returns false
// when ctx is done.
func (s *Supervisor) pause(ctx context.Context, w *worker, ran time.Duration, exited bool, cause error) bool {
	return sleep(ctx, s.backoff(w, ran, exited, cause))
}

// backoff updates w's state and counters for a failed start (cause) or an
// exit after ran, and returns the delay before the next start.
func (s *Supervisor) backoff(w *worker, ran time.Duration, exited bool, cause error) time.Duration {
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
	st.DigestMatches = false
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
	s.persist()
	s.notify()
	if state == StateCrashLoop {
		s.log.Warn("collector crash-looping", "collector", w.base.Name, "restart_in", delay)
	}
	return delay
}

// sleep waits d, or until ctx is done (false).
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
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
