package e2e

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"aead.dev/minisign"

	"fieldgate/gateway/supervisor"
	"fieldgate/gateway/update"
	"fieldgate/internal/testpeer"
	fgruntime "fieldgate/runtime"
)

// latest is the image name every test collector runs.
const latest = "docker.io/fieldgate/collector-modbus:latest"

// TestTamperingRefused: with version 2 running, every tampered bundle and a
// valid older one is refused with its reason, and nothing changes — the
// supervisor and the collectors keep their pids, the slots their content.
func TestTamperingRefused(t *testing.T) {
	g := newGateway(t)
	g.installFirstVersion("2")
	supPid, tasks := g.pids()

	stranger := newStrangerKey(t)
	tests := []struct {
		name   string
		bundle func() string
		want   string
	}{
		{"one flipped byte in the binary", func() string {
			return g.bundle(bundleSpec{version: "3", tamper: func(dir string) { testpeer.FlipByte(t, filepath.Join(dir, "fieldgate")) }})
		}, "hash mismatch on fieldgate: "},
		{"one flipped byte in an image", func() string {
			return g.bundle(bundleSpec{version: "3", tamper: func(dir string) {
				testpeer.FlipByte(t, filepath.Join(dir, "images", "collector-modbus.tar"))
			}})
		}, "hash mismatch on images/collector-modbus.tar: "},
		{"a swapped install.sh", func() string {
			return g.bundle(bundleSpec{version: "3", tamper: func(dir string) {
				os.WriteFile(filepath.Join(dir, "install.sh"), []byte("#!/bin/sh\nrm -rf /\n"), 0o755)
			}})
		}, "hash mismatch on install.sh: "},
		{"a manifest signed by an unknown key", func() string {
			return g.bundle(bundleSpec{version: "3", key: &stranger})
		}, "unknown key: manifest.json is signed by key " + update.KeyID(stranger.ID())},
		{"a valid but older bundle", func() string {
			return g.bundle(bundleSpec{version: "1"})
		}, "downgrade from 2 to 1 refused"},
	}
	slotsBefore := testpeer.TreeSum(t, filepath.Join(g.dataDir, "slots"))
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, err := g.update(tc.bundle())
			if err == nil {
				t.Fatalf("accepted:\n%s", out)
			}
			if !strings.Contains(out, "update refused, nothing changed: "+tc.want) {
				t.Errorf("output lacks the reason %q:\n%s", tc.want, out)
			}
		})
	}
	// Give a supervisor that wrongly noticed a change time to act on it.
	time.Sleep(3 * time.Second)
	if after := testpeer.TreeSum(t, filepath.Join(g.dataDir, "slots")); after != slotsBefore {
		t.Errorf("slots changed:\nbefore:\n%s\nafter:\n%s", slotsBefore, after)
	}
	nowSup, nowTasks := g.pids()
	if nowSup != supPid {
		t.Errorf("supervisor pid %d -> %d", supPid, nowSup)
	}
	for c, pid := range tasks {
		if nowTasks[c] != pid || !alive(pid) {
			t.Errorf("collector %s pid %d -> %d", c, pid, nowTasks[c])
		}
	}
	if h := g.unit.history(); len(h) != 0 {
		t.Errorf("the supervisor restarted: %+v", h)
	}
	g.waitData("data still flowing")
	checkSeq(t, g.seqs, true)
}

// TestGoodUpdate: version 1 → 2 → 3. Each update restarts the supervisor on
// the new slot, the collectors move to the new digests, the version commits
// itself, /status, MQTT, /metrics and `fieldgate update --status` say so,
// and seq shows no gap and no repeat. Images of the version before the
// previous one are removed after the commit; the previous one's stay.
func TestGoodUpdate(t *testing.T) {
	g := newGateway(t)
	g.installFirstVersion("1")

	v2 := g.bundle(bundleSpec{version: "2"})
	start := time.Now()
	out, err := g.update(v2)
	if err != nil {
		t.Fatalf("update to 2: %v\n%s", err, out)
	}
	installed := time.Since(start)
	t.Logf("fieldgate update:\n%s", out)
	st := g.waitVersion("2", g.pins(v2)[latest], supervisor.UpdateCommitted, 120*time.Second)
	t.Logf("FIGURE fieldgate update (verify and stage a %d MiB bundle, switch): %v; to version 2 committed (healthy_for %s): %v",
		dirSize(t, v2)>>20, installed.Round(10*time.Millisecond), healthyFor, time.Since(start).Round(100*time.Millisecond))
	if st.Update.Previous == nil || st.Update.Previous.Version != "1" || st.Update.Last.Result != "committed" || st.Update.Last.From != "1" {
		t.Errorf("update status = %+v", st.Update)
	}
	g.waitData("data from version 2")

	t.Run("status everywhere", func(t *testing.T) {
		out, err := g.fieldgate(nil, "update", "--status", "--config", g.config)
		if err != nil || !strings.Contains(out, "state:     committed") || !strings.Contains(out, "current:   2 (slot b)") ||
			!strings.Contains(out, "previous:  1 (slot a)") || !strings.Contains(out, "last:      committed 2 (from 1)") {
			t.Errorf("fieldgate update --status: %v\n%s", err, out)
		}
		metrics, err := g.get("/metrics")
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{`fieldgate_update_state{state="committed"} 1`, `fieldgate_update_info{current="2",previous="1"} 1`} {
			if !strings.Contains(string(metrics), want) {
				t.Errorf("/metrics lacks %s", want)
			}
		}
		testpeer.WaitFor(t, 30*time.Second, "retained gateway status with version 2 committed", func() bool {
			select {
			case m := <-g.gwState:
				var p struct {
					Version string
					Update  supervisor.UpdateStatus
				}
				json.Unmarshal(m.Payload, &p)
				return p.Version == "2" && p.Update.State == "committed" && p.Update.Current != nil && p.Update.Current.Version == "2"
			default:
				return false
			}
		})
	})

	v3 := g.bundle(bundleSpec{version: "3"})
	if out, err := g.update(v3); err != nil {
		t.Fatalf("update to 3: %v\n%s", err, out)
	}
	g.waitVersion("3", g.pins(v3)[latest], supervisor.UpdateCommitted, 120*time.Second)
	g.waitData("data from version 3")
	t.Run("old images removed after the commit, the previous version's kept", func(t *testing.T) {
		images := g.imageNames()
		for _, want := range []string{"docker.io/fieldgate/collector-modbus:2", "docker.io/fieldgate/collector-modbus:3", latest} {
			if !images[want] {
				t.Errorf("image %s missing: %v", want, images)
			}
		}
		if images["docker.io/fieldgate/collector-modbus:1"] {
			t.Errorf("version 1's image still present: %v", images)
		}
	})
	checkSeq(t, g.seqs, true)
}

// TestBadUpdate: version 2's collector image exits at once. fieldgate rolls
// back to version 1 by itself within the trial window, reports rolled_back
// with the reason, and data continues with no seq gap.
func TestBadUpdate(t *testing.T) {
	g := newGateway(t)
	v1 := g.installFirstVersion("1")

	v2 := g.bundle(bundleSpec{version: "2", collector: g.bins.exit1})
	start := time.Now()
	if out, err := g.update(v2); err != nil {
		t.Fatalf("update to 2: %v\n%s", err, out)
	}
	st := g.waitVersion("1", g.pins(v1)[latest], supervisor.UpdateRolledBack, 180*time.Second)
	took := time.Since(start)
	t.Logf("FIGURE bad update rolled back and collectors on version 1 again in %v", took.Round(100*time.Millisecond))
	l := st.Update.Last
	if l == nil || l.Result != "rolled_back" || l.Version != "2" || l.From != "1" || !strings.Contains(l.Reason, "crash-loops on version 2") {
		t.Errorf("last result = %+v", l)
	}
	if confirm, _ := time.ParseDuration(confirmWithin); took > confirm+time.Minute {
		t.Errorf("rollback took %v, longer than the trial window %v", took, confirm)
	}
	out, _ := g.fieldgate(nil, "update", "--status", "--config", g.config)
	if !strings.Contains(out, "state:     rolled_back") || !strings.Contains(out, "crash-loops") {
		t.Errorf("fieldgate update --status:\n%s", out)
	}
	g.waitData("data after the rollback")
	checkSeq(t, g.seqs, false)
}

// TestSupervisorCannotStart: version 2's binary exits 1. The boot selector
// (version 1's binary) counts its starts and rolls it back: the next start
// runs version 1, whose collectors kept running all along.
func TestSupervisorCannotStart(t *testing.T) {
	g := newGateway(t)
	v1 := g.installFirstVersion("1")
	_, tasks := g.pids()

	v2 := g.bundle(bundleSpec{version: "2", fieldgate: g.bins.exit1})
	start := time.Now()
	if out, err := g.update(v2); err != nil {
		t.Fatalf("update to 2: %v\n%s", err, out)
	}
	st := g.waitVersion("1", g.pins(v1)[latest], supervisor.UpdateRolledBack, 120*time.Second)
	t.Logf("FIGURE a version that cannot start rolled back by the boot counter, version 1 serving again, in %v (RestartSec %v)",
		time.Since(start).Round(100*time.Millisecond), g.unit.restartSec)
	if l := st.Update.Last; l == nil || !strings.Contains(l.Reason, "version 2 was started 3 times without committing itself (boot counter)") {
		t.Errorf("last result = %+v", st.Update.Last)
	}
	var v2Starts int
	for _, s := range g.unit.history() {
		if strings.Contains(s.binary, "/slots/b/") {
			v2Starts++
			if s.exit != 1 {
				t.Errorf("version 2 start exited %d", s.exit)
			}
		}
	}
	if v2Starts != 3 {
		t.Errorf("version 2 was started %d times, want 3: %+v", v2Starts, g.unit.history())
	}
	_, now := g.pids()
	for c, pid := range tasks {
		if now[c] != pid {
			t.Errorf("collector %s was restarted: pid %d -> %d", c, pid, now[c])
		}
	}
	g.waitData("data after the rollback")
	checkSeq(t, g.seqs, true)
}

// TestPowerCut: everything — supervisor, containerd, shims, collectors — is
// killed at each step of an update (staged, switched, on trial) and started
// again; the gateway comes up on a complete version each time and the
// update finishes.
func TestPowerCut(t *testing.T) {
	for _, step := range []string{update.StepStaged, update.StepSwitched, "trial"} {
		t.Run(step, func(t *testing.T) {
			g := newGateway(t)
			v1 := g.installFirstVersion("1")
			v2 := g.bundle(bundleSpec{version: "2"})
			if step == "trial" {
				if out, err := g.update(v2); err != nil {
					t.Fatalf("update: %v\n%s", err, out)
				}
				testpeer.WaitFor(t, 60*time.Second, "version 2 on trial", func() bool {
					st, err := g.status()
					return err == nil && st.Version == "2" && st.Update != nil && st.Update.State == supervisor.UpdateTrial
				})
			} else {
				out, err := g.update(v2, "FIELDGATE_UPDATE_KILL_AFTER="+step)
				if err == nil || !strings.Contains(err.Error(), "killed") {
					t.Fatalf("update was not cut at %s: %v\n%s", step, err, out)
				}
			}
			// The power cut.
			g.unit.kill(syscall.SIGKILL)
			g.ctrd.KillAll(t)
			g.ctrd.Restart(t, t)
			g.unit = startUnit(t, g.root)
			switch step {
			case update.StepStaged:
				// Version 1 runs; version 2 sits staged in the other slot,
				// and the next update replaces it.
				g.waitVersion("1", g.pins(v1)[latest], supervisor.UpdateCommitted, 120*time.Second)
				if out, err := g.update(v2); err != nil {
					t.Fatalf("update after the cut: %v\n%s", err, out)
				}
				fallthrough
			default:
				st := g.waitVersion("2", g.pins(v2)[latest], supervisor.UpdateCommitted, 180*time.Second)
				if st.Update.Last == nil || st.Update.Last.Result != "committed" || st.Update.Last.Version != "2" {
					t.Errorf("last result = %+v", st.Update.Last)
				}
			}
			g.waitData("data after the power cut")
		})
	}
}

func alive(pid uint32) bool { return pid != 0 && syscall.Kill(int(pid), 0) == nil }

// newStrangerKey is a key no gateway trusts.
func newStrangerKey(t *testing.T) minisign.PrivateKey {
	t.Helper()
	dir := t.TempDir()
	if _, err := update.GenerateKey(filepath.Join(dir, "s.key"), filepath.Join(dir, "s.pub"), ""); err != nil {
		t.Fatal(err)
	}
	k, err := update.LoadPrivateKey(filepath.Join(dir, "s.key"), "")
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// imageNames lists the images in the gateway's containerd namespace.
func (g *gateway) imageNames() map[string]bool {
	g.t.Helper()
	rt, err := fgruntime.New(g.ctrd.Address, g.ctrd.Namespace, slog.New(slog.DiscardHandler))
	if err != nil {
		g.t.Fatal(err)
	}
	defer rt.Close()
	imgs, err := rt.Images(context.Background())
	if err != nil {
		g.t.Fatal(err)
	}
	out := map[string]bool{}
	for _, im := range imgs {
		out[im.Name] = true
	}
	return out
}

// dirSize is the bytes of the files under dir.
func dirSize(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	filepath.Walk(dir, func(_ string, info os.FileInfo, err error) error {
		if err == nil && info.Mode().IsRegular() {
			n += info.Size()
		}
		return nil
	})
	return n
}
