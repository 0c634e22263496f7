package update

import (
	"fieldgate/gateway/supervisor"
)

// Status reads the update state as the supervisor reports it; nil (and no
// error) when nothing is installed. It works whether or not a supervisor
// runs (`fieldgate update --status`).
func (s *Store) Status() (*supervisor.UpdateStatus, error) {
	st, err := s.State()
	if err != nil || st == nil {
		return nil, err
	}
	return s.status(st), nil
}

func (s *Store) status(st *State) *supervisor.UpdateStatus {
	out := &supervisor.UpdateStatus{State: supervisor.UpdateCommitted}
	version := func(slot string) *supervisor.SlotVersion {
		m, err := s.Manifest(slot)
		if err != nil {
			return nil
		}
		return &supervisor.SlotVersion{Slot: slot, Version: m.Version}
	}
	out.Current = version(st.Current)
	out.Previous = version(other(st.Current))
	if t := st.Trial; t != nil {
		out.State = supervisor.UpdateTrial
		out.Trial = &supervisor.TrialStatus{Version: t.Version, From: t.From, Boots: t.Boots, MaxBoots: t.MaxBoots, Since: t.Since}
	}
	if l := st.Last; l != nil {
		out.Last = &supervisor.UpdateResult{Result: l.Result, Version: l.Version, From: l.From, Reason: l.Reason, At: l.At}
		if st.Trial == nil && l.Result == supervisor.UpdateRolledBack {
			out.State = supervisor.UpdateRolledBack
		}
	}
	return out
}
