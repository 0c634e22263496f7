package supervisor

import (
	"time"

	"fieldgate/gateway/config"
)

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

// startPlan is what the supervisor does with a collector it finds when it
// starts (or that a reload adds).
type startPlan struct {
	// leave: do not start it; show state (StateStopped or StateExited).
	leave bool
	state string
	// stopRunning: it runs although an operator stopped it (the supervisor
	// died between recording the stop and stopping the task): stop it.
	stopRunning bool
	// died: the task ended while the supervisor was away and is restarted by
	// the policy — a restart, counted; lastExit is how it ended (nil when a
	// reboot took it: no exit status is left).
	died     bool
	lastExit *Exit
	// delay: the back-off still due from before the supervisor restarted.
	delay time.Duration
}

// planAtStart applies Docker's meaning of the restart policies to a
// collector as found when the supervisor starts: c is its container (nil if
// there is none), p what the supervisor recorded before (nil if nothing).
//
//   - an operator's stop (`fieldgate stop`) holds, whatever the policy,
//     until `fieldgate start` (the contract keeps it across reboots; Docker
//     would bring an always container back when its daemon restarts);
//   - a running task is adopted;
//   - a task that exited while the supervisor was away is restarted if the
//     policy restarts its exit code (on-failure: unless it exited 0);
//   - a container without a task (after a reboot, containerd lists the
//     containers but no tasks) is started again unless its policy is never
//     or it had exited for good before: a reboot is not an exit of the
//     collector, so on-failure restarts it too;
//   - the back-off a crash-looping collector was waiting out continues.
func planAtStart(policy string, c *Container, p *persistedCollector, now time.Time, maxDelay time.Duration) startPlan {
	if p != nil && p.OperatorStopped {
		return startPlan{leave: true, state: StateStopped, stopRunning: c != nil && c.Running}
	}
	if c != nil && c.Running {
		return startPlan{}
	}
	exitedBefore := p != nil && p.State == StateExited
	var plan startPlan
	switch {
	case c != nil && c.Exited && !exitedBefore:
		exit := Exit{Code: c.ExitCode, At: c.ExitedAt}
		if !ShouldRestart(policy, exit.Code) {
			return startPlan{leave: true, state: StateExited, lastExit: &exit}
		}
		plan = startPlan{died: true, lastExit: &exit}
	case exitedBefore:
		code := 0
		if p.LastExit != nil {
			code = p.LastExit.Code
		}
		if !ShouldRestart(policy, code) {
			return startPlan{leave: true, state: StateExited}
		}
		plan = startPlan{died: c != nil}
	case c != nil: // no task: a reboot, or containerd lost its state
		if policy == config.RestartNever {
			return startPlan{leave: true, state: StateExited}
		}
		plan = startPlan{died: true}
	}
	if p != nil && p.RestartAt != nil && (p.State == StateBackoff || p.State == StateCrashLoop || p.State == StateError) {
		if d := p.RestartAt.Sub(now); d > 0 {
			plan.delay = min(d, maxDelay)
		}
	}
	return plan
}
