package supervisor

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"
)

// ErrUnknownCollector is wrapped by StopCollector and StartCollector when no
// collector of that name is configured.
var ErrUnknownCollector = errors.New("unknown collector")

// ErrNotRunning is wrapped by StopCollector and StartCollector when Run is
// not running.
var ErrNotRunning = errors.New("supervisor not running")

// StopCollector is `fieldgate stop NAME`: it records the operator's stop in
// the state file first (a failure there changes nothing), then stops the
// task (SIGTERM, SIGKILL after the runtime's deadline) and removes the
// container. The collector then shows StateStopped and stays down, across
// supervisor restarts and reboots, whatever its restart policy, until
// StartCollector.
func (s *Supervisor) StopCollector(ctx context.Context, name string) (CollectorStatus, error) {
	s.reconcileMu.Lock()
	defer s.reconcileMu.Unlock()
	w, run, err := s.lookup(name)
	if err != nil {
		return CollectorStatus{}, err
	}
	s.mu.Lock()
	already := w.st.operatorStopped
	s.mu.Unlock()
	if already {
		return s.collectorStatus(name), nil
	}
	now := time.Now()
	w.cancel()
	<-w.done
	s.update(w, func(st *CollectorStatus) {
		st.operatorStopped, st.StoppedAt = true, &now
		st.State, st.Pid, st.RestartAt, st.DigestMatches = StateStopped, 0, nil, false
	})
	if err := s.saveErrNow(); err != nil {
		// Not recorded: do not stop what could not be kept stopped.
		s.update(w, func(st *CollectorStatus) { st.operatorStopped, st.StoppedAt = false, nil })
		s.restartWorker(run, w, startPlan{})
		return CollectorStatus{}, fmt.Errorf("stop collector %q: %w", name, err)
	}
	s.log.Info("collector stopped by an operator", "collector", name)
	if err := s.remove(ctx, name); err != nil {
		s.update(w, func(st *CollectorStatus) { st.LastError = "stop: " + err.Error() })
		return s.collectorStatus(name), fmt.Errorf("stop collector %q: %w", name, err)
	}
	s.restartWorker(run, w, startPlan{leave: true, state: StateStopped})
	return s.collectorStatus(name), nil
}

// StartCollector undoes StopCollector, and starts a collector that exited
// for good (its policy did not restart it). A collector that runs already is
// left as it is. It returns once the first start was tried; the status says
// how it went.
func (s *Supervisor) StartCollector(ctx context.Context, name string) (CollectorStatus, error) {
	s.reconcileMu.Lock()
	defer s.reconcileMu.Unlock()
	w, run, err := s.lookup(name)
	if err != nil {
		return CollectorStatus{}, err
	}
	s.mu.Lock()
	state := w.st.State
	s.mu.Unlock()
	if state != StateStopped && state != StateExited {
		return s.collectorStatus(name), nil
	}
	w.cancel()
	<-w.done
	s.update(w, func(st *CollectorStatus) {
		st.operatorStopped, st.StoppedAt = false, nil
		st.consecutive, st.fastFailures = 0, 0 // an operator's start is a fresh start
	})
	s.log.Info("collector started by an operator", "collector", name)
	nw := s.restartWorker(run, w, startPlan{})
	select {
	case <-nw.attempted:
	case <-ctx.Done():
	}
	return s.collectorStatus(name), nil
}

// lookup finds collector name's worker while Run runs.
func (s *Supervisor) lookup(name string) (*worker, *runningCtx, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.running == nil {
		return nil, nil, ErrNotRunning
	}
	w := s.workers[name]
	if w == nil {
		names := make([]string, 0, len(s.workers))
		for n := range s.workers {
			names = append(names, n)
		}
		sort.Strings(names)
		return nil, nil, fmt.Errorf("%w %q (configured: %s)", ErrUnknownCollector, name, strings.Join(names, ", "))
	}
	return w, s.running, nil
}

// restartWorker replaces w (cancelled and done) by a new worker with its
// counters, per plan.
func (s *Supervisor) restartWorker(run *runningCtx, w *worker, plan startPlan) *worker {
	s.mu.Lock()
	prev := w.st
	id := w.spec.Identity
	s.mu.Unlock()
	return s.startWorker(run.ctx, run.g, w.base, id, w.col, &prev, plan)
}

func (s *Supervisor) collectorStatus(name string) CollectorStatus {
	for _, c := range s.Status().Collectors {
		if c.Name == name {
			return c
		}
	}
	return CollectorStatus{Name: name}
}

// saveErrNow writes the state file and returns its error.
func (s *Supervisor) saveErrNow() error {
	s.persist()
	s.saveMu.Lock()
	defer s.saveMu.Unlock()
	if s.saveErr != "" {
		return errors.New(s.saveErr)
	}
	return nil
}
