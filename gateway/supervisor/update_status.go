package supervisor

import "time"

// Firmware update states (UpdateStatus.State).
const (
	// UpdateTrial: a new version runs on trial; it commits itself once
	// healthy, or is rolled back.
	UpdateTrial = "trial"
	// UpdateCommitted: the running version is committed (also after a first
	// installation, which has nothing to roll back to).
	UpdateCommitted = "committed"
	// UpdateRolledBack: the last update was rolled back; the previous,
	// committed version runs again.
	UpdateRolledBack = "rolled_back"
)

// UpdateStatus is the firmware update state (package fieldgate/gateway/update
// fills it): shown in /status, the retained gateway status on MQTT and
// /metrics.
type UpdateStatus struct {
	// State is UpdateTrial, UpdateCommitted or UpdateRolledBack.
	State string `json:"state"`
	// Current is the version in the active slot; Previous the one in the
	// other slot (what a rollback returns to while on trial).
	Current  *SlotVersion `json:"current,omitempty"`
	Previous *SlotVersion `json:"previous,omitempty"`
	// Trial is set while a version is on trial.
	Trial *TrialStatus `json:"trial,omitempty"`
	// Last is the outcome of the last installation.
	Last *UpdateResult `json:"last,omitempty"`
}

// SlotVersion is the firmware version installed in a slot.
type SlotVersion struct {
	Slot    string `json:"slot"`
	Version string `json:"version"`
}

// TrialStatus is a version on trial.
type TrialStatus struct {
	Version string `json:"version"`
	// From is the committed version it replaces.
	From string `json:"from"`
	// Boots counts the starts of the version so far (the boot counter);
	// at MaxBoots the next start rolls it back.
	Boots    int       `json:"boots"`
	MaxBoots int       `json:"max_boots"`
	Since    time.Time `json:"since"`
	// Deadline is when this start of the version rolls back unless healthy
	// (set by the running supervisor).
	Deadline *time.Time `json:"deadline,omitempty"`
	// Waiting says what the commit still waits for.
	Waiting string `json:"waiting,omitempty"`
}

// UpdateResult is how an installation ended: committed or rolled_back.
type UpdateResult struct {
	Result  string    `json:"result"`
	Version string    `json:"version"`
	From    string    `json:"from,omitempty"`
	Reason  string    `json:"reason,omitempty"`
	At      time.Time `json:"at"`
}

// WithUpdateStatus makes Status report f's result as Status.Update (f may
// return nil: no firmware slot installed). Call NotifyChanged when it changes.
func WithUpdateStatus(f func() *UpdateStatus) Option {
	return func(o *options) { o.updateStatus = f }
}

// NotifyChanged signals a status change made outside the supervisor (the
// firmware update state), so that the gateway status is republished.
func (s *Supervisor) NotifyChanged() { s.notify() }
