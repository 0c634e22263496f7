package update

import (
	"fmt"
	"time"
)

// The boot selector runs before every start of the supervisor (the systemd
// unit's ExecStartPre) and is the binary of the last committed version: a
// new version that exits at once cannot count its own failed starts, so the
// known-good one does. It decides which slot the start runs and leaves the
// current link pointing at it.

// BootDecision is what Boot decided.
type BootDecision struct {
	// Installed is false when no firmware slot is installed (nothing to do).
	Installed bool
	Slot      string
	Version   string
	// Trial is set when the start runs a version on trial: its boot count
	// after this start, out of MaxBoots.
	Trial    bool
	Boots    int
	MaxBoots int
	// RolledBack is set when this start rolls the trial version back.
	RolledBack bool
	Reason     string
}

// Boot counts a start of a version on trial and rolls it back when it has
// used up its starts (update.boot_attempts) or its slot is incomplete; it
// repairs the current and committed links in every case.
func (s *Store) Boot(now time.Time) (BootDecision, error) {
	unlock, err := s.lock()
	if err != nil {
		return BootDecision{}, err
	}
	defer unlock()
	st, err := s.State()
	if err != nil || st == nil {
		return BootDecision{}, err
	}
	orig := *st
	d := BootDecision{Installed: true}
	if t := st.Trial; t != nil && st.Current != st.Committed {
		switch err := s.slotComplete(st.Current); {
		case err != nil:
			s.rollback(st, now, fmt.Sprintf("version %s cannot start: %v", t.Version, err))
		case t.Boots >= t.MaxBoots:
			s.rollback(st, now, fmt.Sprintf("version %s was started %d times without committing itself (boot counter)", t.Version, t.Boots))
		default:
			nt := *t
			nt.Boots++
			st.Trial = &nt
			d.Trial, d.Boots, d.MaxBoots = true, nt.Boots, nt.MaxBoots
		}
		if st.Trial == nil {
			d.RolledBack, d.Reason = true, st.Last.Reason
		}
	} else if st.Trial != nil {
		// A trial of the committed slot itself cannot be: drop it.
		st.Trial = nil
	}
	if !equalState(&orig, st) {
		if err := s.writeState(st); err != nil {
			return d, err
		}
	} else if err := s.syncLinks(st); err != nil {
		return d, err
	}
	d.Slot = st.Current
	if m, err := s.Manifest(st.Current); err == nil {
		d.Version = m.Version
	}
	return d, nil
}

// rollback makes st run the committed slot again and records why.
func (s *Store) rollback(st *State, now time.Time, reason string) {
	t := st.Trial
	st.Current = st.Committed
	st.Trial = nil
	st.Last = &Result{Result: "rolled_back", Version: t.Version, From: t.From, Reason: reason, At: now.UTC()}
}

// RollBack rolls the version on trial in slot back to the committed one,
// recording reason; false when slot is no longer on trial (committed or
// rolled back meanwhile).
func (s *Store) RollBack(slot, reason string, now time.Time) (bool, error) {
	return s.endTrial(slot, func(st *State) { s.rollback(st, now, reason) })
}

// Commit commits the version on trial in slot; false when slot is no longer
// on trial.
func (s *Store) Commit(slot string, now time.Time) (bool, error) {
	return s.endTrial(slot, func(st *State) {
		t := st.Trial
		st.Committed = st.Current
		st.Trial = nil
		st.Last = &Result{Result: "committed", Version: t.Version, From: t.From, At: now.UTC()}
	})
}

func (s *Store) endTrial(slot string, end func(*State)) (bool, error) {
	unlock, err := s.lock()
	if err != nil {
		return false, err
	}
	defer unlock()
	st, err := s.State()
	if err != nil || st == nil {
		return false, err
	}
	if st.Trial == nil || st.Current != slot {
		return false, nil
	}
	end(st)
	return true, s.writeState(st)
}
