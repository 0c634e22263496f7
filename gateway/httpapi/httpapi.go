// Package httpapi serves the supervisor's HTTP endpoints on gateway.listen:
// /healthz, /status (JSON), /metrics (Prometheus), and the operator's
// POST /collectors/NAME/stop and /start (`fieldgate stop|start NAME`), which
// answer only root on the gateway (by the uid owning the client's loopback
// socket) or a client with the operator token (TokenFile) as
// `Authorization: Bearer TOKEN`: collectors share the host network.
package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"fieldgate/gateway/supervisor"
)

// StatusSource gives the supervisor's current status.
type StatusSource interface {
	Status() supervisor.Status
}

// Controller stops and starts collectors for an operator. A StatusSource
// that is also a Controller gets the POST /collectors/NAME/stop and /start
// endpoints.
type Controller interface {
	StopCollector(ctx context.Context, name string) (supervisor.CollectorStatus, error)
	StartCollector(ctx context.Context, name string) (supervisor.CollectorStatus, error)
}

// ErrorBody is the JSON body of an endpoint's error answer.
type ErrorBody struct {
	Error string `json:"error"`
}

// shutdownTimeout bounds how long Run waits for in-flight requests at stop.
const shutdownTimeout = 5 * time.Second

// Server serves the endpoints. Create it with New.
type Server struct {
	addr string
	src  StatusSource
	log  *slog.Logger
	mux  *http.ServeMux
	ln   net.Listener
}

// New returns a server for addr (HOST:PORT; port 0 picks a free one, see
// Addr) reporting src. controlToken guards the operator's endpoints (see
// Handler).
func New(addr string, src StatusSource, log *slog.Logger, controlToken string) (*Server, error) {
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return nil, fmt.Errorf("http listen address %q: %w", addr, err)
	}
	if src == nil {
		return nil, errors.New("httpapi: no status source")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{addr: addr, src: src, log: log}
	s.mux = Handler(src, controlToken)
	return s, nil
}

// Handler returns the endpoints' handler. The operator's endpoints exist
// when src is also a Controller and controlToken is set; a request neither
// from root on this host nor with `Authorization: Bearer controlToken` gets
// 401.
func Handler(src StatusSource, controlToken string) *http.ServeMux {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		&metrics{src: src},
	)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(src.Status())
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	if c, ok := src.(Controller); ok && controlToken != "" {
		mux.HandleFunc("POST /collectors/{name}/stop", control(controlToken, c.StopCollector))
		mux.HandleFunc("POST /collectors/{name}/start", control(controlToken, c.StartCollector))
	}
	return mux
}

// control answers an operator's stop or start: the collector's status, or
// an ErrorBody with 401 without the token, 404 for an unknown collector, 503
// when the supervisor is not running, 500 otherwise.
func control(token string, do func(context.Context, string) (supervisor.CollectorStatus, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		if !authorized(r.Header.Get("Authorization"), token) && !fromRoot(r) {
			w.WriteHeader(http.StatusUnauthorized)
			_ = enc.Encode(ErrorBody{Error: "not allowed: run as root on the gateway, or give the operator token (" + TokenFile + " in the supervisor's state dir)"})
			return
		}
		st, err := do(r.Context(), r.PathValue("name"))
		if err != nil {
			code := http.StatusInternalServerError
			switch {
			case errors.Is(err, supervisor.ErrUnknownCollector):
				code = http.StatusNotFound
			case errors.Is(err, supervisor.ErrNotRunning):
				code = http.StatusServiceUnavailable
			}
			w.WriteHeader(code)
			_ = enc.Encode(ErrorBody{Error: err.Error()})
			return
		}
		_ = enc.Encode(st)
	}
}

// fromRoot reports whether the request comes over loopback from a socket
// that root opened (peerUID).
func fromRoot(r *http.Request) bool {
	remote, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	la, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	if !ok {
		return false
	}
	local, err := netip.ParseAddrPort(la.String())
	if err != nil {
		return false
	}
	uid, ok := peerUID(remote, local)
	return ok && uid == 0
}

// Listen binds the address; Run calls it if it was not called before.
func (s *Server) Listen() error {
	if s.ln != nil {
		return nil
	}
	ln, err := net.Listen("tcp", s.addr)
	if err != nil {
		return fmt.Errorf("http listen on %q: %w", s.addr, err)
	}
	s.ln = ln
	return nil
}

// Addr is the bound address (after Listen).
func (s *Server) Addr() string {
	if s.ln == nil {
		return s.addr
	}
	return s.ln.Addr().String()
}

// Run serves until ctx is done, then shuts down within shutdownTimeout.
func (s *Server) Run(ctx context.Context) error {
	if err := s.Listen(); err != nil {
		return err
	}
	srv := &http.Server{Handler: s.mux, ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(s.ln) }()
	s.log.Info("http listening", "addr", s.Addr())
	select {
	case err := <-errc:
		return fmt.Errorf("http serve: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("http shutdown: %w", err)
	}
	<-errc
	return nil
}

// metrics exports the supervisor status at scrape time, so the numbers are
// exactly those of /status.
type metrics struct{ src StatusSource }

var (
	descUp = prometheus.NewDesc("fieldgate_collector_up",
		"1 when the collector's task is running.", []string{"collector"}, nil)
	descRestarts = prometheus.NewDesc("fieldgate_collector_restarts_total",
		"Restarts of the collector's task by its restart policy (kept across supervisor restarts).", []string{"collector"}, nil)
	descDigest = prometheus.NewDesc("fieldgate_collector_image_current",
		"1 when the collector's task runs the image digest its tag points to.", []string{"collector"}, nil)
	descState = prometheus.NewDesc("fieldgate_collector_state",
		"1 for the collector's current state (starting, running, backoff, crashloop, exited, stopped, error).", []string{"collector", "state"}, nil)
	descLastExit = prometheus.NewDesc("fieldgate_collector_last_exit_code",
		"Exit code of the collector's last exited task.", []string{"collector"}, nil)
	descStarted = prometheus.NewDesc("fieldgate_collector_start_time_seconds",
		"Unix time the collector's task started.", []string{"collector"}, nil)
	descReloads = prometheus.NewDesc("fieldgate_reload_total",
		"Config reloads by result (ok, error).", []string{"result"}, nil)
	descInfo = prometheus.NewDesc("fieldgate_build_info",
		"fieldgate version and gateway id.", []string{"version", "gateway"}, nil)

	// From each collector's own report (its status.json), counted since
	// the collector started.
	descQueuePending = prometheus.NewDesc("fieldgate_collector_queue_pending",
		"Batches in the collector's outbound queue, not yet acknowledged by the broker.", []string{"collector"}, nil)
	descQueueBytes = prometheus.NewDesc("fieldgate_collector_queue_bytes",
		"Bytes of those batches.", []string{"collector"}, nil)
	descQueueDropped = prometheus.NewDesc("fieldgate_collector_queue_dropped_total",
		"Batches dropped because the queue (or its memory fallback) was full or they were too old.", []string{"collector"}, nil)
	descQueueRejected = prometheus.NewDesc("fieldgate_collector_queue_rejected_total",
		"Batches refused because the queue was full (reject_new).", []string{"collector"}, nil)
	descQueueCorrupt = prometheus.NewDesc("fieldgate_collector_queue_corrupt_total",
		"Queued batches (or torn log tails) found damaged on disk and skipped.", []string{"collector"}, nil)
	descQueueAppendFailed = prometheus.NewDesc("fieldgate_collector_queue_append_failed_total",
		"Batches the disk refused (held in memory while there was room).", []string{"collector"}, nil)
	descDegraded = prometheus.NewDesc("fieldgate_collector_degraded",
		"1 while the collector reports itself degraded (its queue cannot keep its promise: disk full, I/O errors).", []string{"collector"}, nil)
	descResumedLost = prometheus.NewDesc("fieldgate_collector_resumed_lost_seqs",
		"Seqs an unclean stop before the collector's start may have lost (the range its status names).", []string{"collector"}, nil)
	descPollOverruns = prometheus.NewDesc("fieldgate_collector_poll_overruns_total",
		"Poll cycles that ran past the next one's start (which then began at once): the link is too slow for the interval.", []string{"collector"}, nil)
	descPollSkipped = prometheus.NewDesc("fieldgate_collector_poll_skipped_total",
		"Poll slots that got no cycle because a cycle overran past them.", []string{"collector"}, nil)
	descPollLateP99 = prometheus.NewDesc("fieldgate_collector_poll_late_p99_seconds",
		"99th percentile of how late poll cycles started against their schedule, since the collector started.", []string{"collector"}, nil)
	descUpdateState = prometheus.NewDesc("fieldgate_update_state",
		"1 for the firmware update state (trial, committed, rolled_back).", []string{"state"}, nil)
	descUpdateInfo = prometheus.NewDesc("fieldgate_update_info",
		"Firmware versions in the active (current) and the other (previous) slot.", []string{"current", "previous"}, nil)
	descUpdateBoots = prometheus.NewDesc("fieldgate_update_trial_boots",
		"Starts of the version on trial so far (the boot counter).", nil, nil)
	descUpdateMaxBoots = prometheus.NewDesc("fieldgate_update_trial_max_boots",
		"Starts the version on trial gets before it is rolled back.", nil, nil)
	descUpdateLast = prometheus.NewDesc("fieldgate_update_last_result_timestamp_seconds",
		"Unix time of the last installation's outcome, by result (committed, rolled_back) and version.", []string{"result", "version"}, nil)
)

// collectorReport is what /metrics takes from a collector's own report
// (supervisor.CollectorStatus.Report, the collector's status.json).
type collectorReport struct {
	Degraded string `json:"degraded"`
	Resumed  *struct {
		LostFrom uint64 `json:"lost_from"`
		LostTo   uint64 `json:"lost_to"`
	} `json:"resumed"`
	Poll *struct {
		Overruns  uint64  `json:"overruns"`
		Skipped   uint64  `json:"skipped"`
		LateP99Ms float64 `json:"late_p99_ms"`
	} `json:"poll"`
	Queue *struct {
		Pending      int    `json:"pending"`
		Bytes        int64  `json:"bytes"`
		Dropped      uint64 `json:"dropped"`
		Rejected     uint64 `json:"rejected"`
		Corrupt      uint64 `json:"corrupt"`
		AppendFailed uint64 `json:"append_failed"`
	} `json:"queue"`
}

var updateStates = []string{supervisor.UpdateTrial, supervisor.UpdateCommitted, supervisor.UpdateRolledBack}

var allStates = []string{supervisor.StateStarting, supervisor.StateRunning, supervisor.StateBackoff,
	supervisor.StateCrashLoop, supervisor.StateExited, supervisor.StateStopped, supervisor.StateError}

func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descUp, descRestarts, descDigest, descState, descLastExit, descStarted, descReloads, descInfo,
		descQueuePending, descQueueBytes, descQueueDropped, descQueueRejected, descQueueCorrupt, descQueueAppendFailed,
		descDegraded, descResumedLost, descPollOverruns, descPollSkipped, descPollLateP99,
		descUpdateState, descUpdateInfo, descUpdateBoots, descUpdateMaxBoots, descUpdateLast} {
		ch <- d
	}
}

func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	st := m.src.Status()
	ch <- prometheus.MustNewConstMetric(descInfo, prometheus.GaugeValue, 1, st.Version, st.GatewayID)
	ch <- prometheus.MustNewConstMetric(descReloads, prometheus.CounterValue, float64(st.ReloadsOK), "ok")
	ch <- prometheus.MustNewConstMetric(descReloads, prometheus.CounterValue, float64(st.ReloadsFailed), "error")
	collectUpdate(ch, st.Update)
	for _, c := range st.Collectors {
		up := 0.0
		if c.State == supervisor.StateRunning {
			up = 1
		}
		ch <- prometheus.MustNewConstMetric(descUp, prometheus.GaugeValue, up, c.Name)
		ch <- prometheus.MustNewConstMetric(descRestarts, prometheus.CounterValue, float64(c.Restarts), c.Name)
		current := 0.0
		if c.DigestMatches {
			current = 1
		}
		ch <- prometheus.MustNewConstMetric(descDigest, prometheus.GaugeValue, current, c.Name)
		for _, s := range allStates {
			v := 0.0
			if c.State == s {
				v = 1
			}
			ch <- prometheus.MustNewConstMetric(descState, prometheus.GaugeValue, v, c.Name, s)
		}
		if c.LastExit != nil {
			ch <- prometheus.MustNewConstMetric(descLastExit, prometheus.GaugeValue, float64(c.LastExit.Code), c.Name)
		}
		if c.StartedAt != nil {
			ch <- prometheus.MustNewConstMetric(descStarted, prometheus.GaugeValue, float64(c.StartedAt.UnixNano())/1e9, c.Name)
		}
		collectReport(ch, c)
	}
}

// collectReport exports the figures of a collector's own report, if it has
// a readable one.
func collectReport(ch chan<- prometheus.Metric, c supervisor.CollectorStatus) {
	var r collectorReport
	if len(c.Report) == 0 || json.Unmarshal(c.Report, &r) != nil {
		return
	}
	degraded := 0.0
	if r.Degraded != "" {
		degraded = 1
	}
	ch <- prometheus.MustNewConstMetric(descDegraded, prometheus.GaugeValue, degraded, c.Name)
	lost := 0.0
	if r.Resumed != nil && r.Resumed.LostTo >= r.Resumed.LostFrom && r.Resumed.LostFrom > 0 {
		lost = float64(r.Resumed.LostTo - r.Resumed.LostFrom + 1)
	}
	ch <- prometheus.MustNewConstMetric(descResumedLost, prometheus.GaugeValue, lost, c.Name)
	if p := r.Poll; p != nil {
		ch <- prometheus.MustNewConstMetric(descPollOverruns, prometheus.CounterValue, float64(p.Overruns), c.Name)
		ch <- prometheus.MustNewConstMetric(descPollSkipped, prometheus.CounterValue, float64(p.Skipped), c.Name)
		ch <- prometheus.MustNewConstMetric(descPollLateP99, prometheus.GaugeValue, p.LateP99Ms/1000, c.Name)
	}
	if q := r.Queue; q != nil {
		ch <- prometheus.MustNewConstMetric(descQueuePending, prometheus.GaugeValue, float64(q.Pending), c.Name)
		ch <- prometheus.MustNewConstMetric(descQueueBytes, prometheus.GaugeValue, float64(q.Bytes), c.Name)
		ch <- prometheus.MustNewConstMetric(descQueueDropped, prometheus.CounterValue, float64(q.Dropped), c.Name)
		ch <- prometheus.MustNewConstMetric(descQueueRejected, prometheus.CounterValue, float64(q.Rejected), c.Name)
		ch <- prometheus.MustNewConstMetric(descQueueCorrupt, prometheus.CounterValue, float64(q.Corrupt), c.Name)
		ch <- prometheus.MustNewConstMetric(descQueueAppendFailed, prometheus.CounterValue, float64(q.AppendFailed), c.Name)
	}
}

// collectUpdate exports the firmware update state, when a firmware is
// installed.
func collectUpdate(ch chan<- prometheus.Metric, u *supervisor.UpdateStatus) {
	if u == nil {
		return
	}
	for _, s := range updateStates {
		v := 0.0
		if u.State == s {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(descUpdateState, prometheus.GaugeValue, v, s)
	}
	current, previous := "", ""
	if u.Current != nil {
		current = u.Current.Version
	}
	if u.Previous != nil {
		previous = u.Previous.Version
	}
	ch <- prometheus.MustNewConstMetric(descUpdateInfo, prometheus.GaugeValue, 1, current, previous)
	if u.Trial != nil {
		ch <- prometheus.MustNewConstMetric(descUpdateBoots, prometheus.GaugeValue, float64(u.Trial.Boots))
		ch <- prometheus.MustNewConstMetric(descUpdateMaxBoots, prometheus.GaugeValue, float64(u.Trial.MaxBoots))
	}
	if l := u.Last; l != nil {
		ch <- prometheus.MustNewConstMetric(descUpdateLast, prometheus.GaugeValue, float64(l.At.UnixNano())/1e9, l.Result, l.Version)
	}
}
