package supervisor

import (
	"context"
	"sort"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"
)

// pruneTimeout bounds one call of the PruneFunc.
const pruneTimeout = time.Minute

// watchIdentities resolves every collector's identity every identityEvery
// until ctx is done: a running collector whose identity changed is
// recreated (checkIdentities), and once all run what they should, the
// images nobody needs go (maybePrune).
func (s *Supervisor) watchIdentities(ctx context.Context, g *errgroup.Group) {
	t := time.NewTicker(s.opts.identityEvery)
	defer t.Stop()
	for {
		s.checkIdentities(ctx, g)
		s.maybePrune(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// checkIdentities resolves each collector's identity. A running collector
// whose identity changed — its tag points to another digest, a secret file
// changed, a device path leads to another node (a re-plug) — is recreated;
// one at a time, each waiting for the previous one's first start, and the
// runtime stops the old task before it creates the new container, so a
// serial line never has two owners. Parts that cannot be resolved (an
// unplugged device) are no change.
func (s *Supervisor) checkIdentities(ctx context.Context, g *errgroup.Group) {
	s.reconcileMu.Lock()
	defer s.reconcileMu.Unlock()
	s.mu.Lock()
	names := make([]string, 0, len(s.workers))
	for name := range s.workers {
		names = append(names, name)
	}
	s.mu.Unlock()
	sort.Strings(names)
	changedStatus := false
	defer func() {
		if changedStatus {
			s.notify()
		}
	}()
	for _, name := range names {
		if ctx.Err() != nil {
			return
		}
		s.mu.Lock()
		w := s.workers[name]
		if w == nil {
			s.mu.Unlock()
			continue
		}
		base, cur, state := w.base, w.spec, w.st.State
		s.mu.Unlock()
		id, err := ResolveIdentity(ctx, s.opts.images, &base)
		next := base.WithIdentity(MergeIdentity(cur.Identity, id))
		s.mu.Lock()
		if w.st.ConfiguredDigest != id.ImageDigest {
			w.st.ConfiguredDigest = id.ImageDigest
			w.st.DigestMatches = w.st.State == StateRunning && w.st.ImageDigest != "" && w.st.ImageDigest == id.ImageDigest
			changedStatus = true
		}
		running := w.st.ImageDigest
		warn := state == StateRunning && !w.st.DigestMatches && running != "" && w.warned != id.ImageDigest
		if warn {
			w.warned = id.ImageDigest
		}
		s.mu.Unlock()
		if err != nil {
			s.log.Debug("collector identity partly unresolved", "collector", name, "err", err)
		}
		if warn {
			s.log.Warn("collector runs another image than its tag names", "collector", name,
				"image", base.Image, "running_digest", running, "configured_digest", id.ImageDigest)
		}
		if state != StateRunning || next.Labels[LabelSpecHash] == cur.Labels[LabelSpecHash] {
			continue
		}
		changes := IdentityChanges(cur.Identity, next.Identity)
		s.log.Warn("collector identity changed; recreating", "collector", name, "changes", strings.Join(changes, "; "))
		s.recreate(ctx, g, w)
	}
}

// recreate replaces w's worker by a new one (same counters) and waits for
// its first start attempt; the new worker resolves the identity again and
// the runtime replaces the container, old task first.
func (s *Supervisor) recreate(ctx context.Context, g *errgroup.Group, w *worker) {
	w.cancel()
	<-w.done
	s.mu.Lock()
	if s.workers[w.base.Name] != w { // removed meanwhile
		s.mu.Unlock()
		return
	}
	prev := w.st
	prev.Recreations++
	id := w.spec.Identity
	s.mu.Unlock()
	nw := s.startWorker(ctx, g, w.base, id, w.col, &prev, startPlan{})
	select {
	case <-nw.attempted:
	case <-ctx.Done():
	}
}

// maybePrune calls the PruneFunc once every collector runs the digest its
// tag points to, or is not meant to run, when that set of digests changed
// since the last successful call.
func (s *Supervisor) maybePrune(ctx context.Context) {
	if s.opts.prune == nil {
		return
	}
	s.mu.Lock()
	inUse := map[string]bool{}
	settled := true
	for _, w := range s.workers {
		st := &w.st
		switch st.State {
		case StateRunning:
			settled = settled && st.DigestMatches
		case StateStopped, StateExited:
		default:
			settled = false
		}
		for _, d := range []string{st.ImageDigest, st.ConfiguredDigest, w.spec.Identity.ImageDigest} {
			if d != "" {
				inUse[d] = true
			}
		}
	}
	s.mu.Unlock()
	if !settled {
		return
	}
	list := make([]string, 0, len(inUse))
	for d := range inUse {
		list = append(list, d)
	}
	sort.Strings(list)
	key := strings.Join(list, ",")
	if key == s.pruned {
		return
	}
	pctx, cancel := context.WithTimeout(ctx, pruneTimeout)
	defer cancel()
	if err := s.opts.prune(pctx, list); err != nil {
		s.log.Warn("image prune failed; retried at the next check", "err", err)
		return
	}
	s.pruned = key
}
