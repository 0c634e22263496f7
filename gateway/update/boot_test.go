package update

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"fieldgate/internal/testpeer"
)

// onTrial is a gateway with version 1 committed in slot a and version 2 on
// trial in slot b, allowed maxBoots starts.
func onTrial(t *testing.T, maxBoots int) *gateway {
	t.Helper()
	g := newGateway(t)
	g.install(t, makeBundle(t, g.release, bundleSpec{version: "1"}))
	g.install(t, makeBundle(t, g.release, bundleSpec{version: "2"}), WithBootAttempts(maxBoots))
	return g
}

func TestBootCounter(t *testing.T) {
	g := onTrial(t, 3)
	now := time.Unix(1764345600, 0)
	for boot := 1; boot <= 3; boot++ {
		d, err := g.store.Boot(now)
		if err != nil {
			t.Fatal(err)
		}
		if d.Slot != SlotB || d.Version != "2" || !d.Trial || d.Boots != boot || d.RolledBack {
			t.Fatalf("start %d: %+v", boot, d)
		}
	}
	// The fourth start: the version used up its starts without committing.
	d, err := g.store.Boot(now)
	if err != nil {
		t.Fatal(err)
	}
	if d.Slot != SlotA || d.Version != "1" || !d.RolledBack || !strings.Contains(d.Reason, "version 2 was started 3 times without committing itself (boot counter)") {
		t.Fatalf("fourth start: %+v", d)
	}
	st := g.state(t)
	if st.Current != SlotA || st.Trial != nil || st.Last.Result != "rolled_back" || st.Last.Version != "2" || st.Last.From != "1" {
		t.Errorf("state = %+v %+v", st, st.Last)
	}
	if target, _ := os.Readlink(filepath.Join(g.store.Dir(), CurrentLink)); target != SlotA {
		t.Errorf("current -> %q", target)
	}
	// Later starts run the committed version and change nothing.
	before := testpeer.TreeSum(t, g.store.Dir())
	if d, err := g.store.Boot(now); err != nil || d.Slot != SlotA || d.RolledBack || d.Trial {
		t.Errorf("after rollback: %+v %v", d, err)
	}
	if after := testpeer.TreeSum(t, g.store.Dir()); after != before {
		t.Errorf("a committed start changed the slots:\n%s\n%s", before, after)
	}
}

func TestBootIncompleteSlot(t *testing.T) {
	g := onTrial(t, 3)
	if err := os.Remove(filepath.Join(g.store.SlotDir(SlotB), BinaryFile)); err != nil {
		t.Fatal(err)
	}
	d, err := g.store.Boot(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if d.Slot != SlotA || !d.RolledBack || !strings.Contains(d.Reason, "version 2 cannot start") {
		t.Errorf("decision = %+v", d)
	}
}

// TestBootRepairsLinks: a power cut between the rename of state.json and the
// links leaves them stale; the boot selector puts them right.
func TestBootRepairsLinks(t *testing.T) {
	g := onTrial(t, 3)
	link := filepath.Join(g.store.Dir(), CurrentLink)
	os.Remove(link)
	if err := os.Symlink(SlotA, link); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(g.store.Dir(), CommittedLink))
	if _, err := g.store.Boot(time.Now()); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{CurrentLink: SlotB, CommittedLink: SlotA} {
		if target, err := os.Readlink(filepath.Join(g.store.Dir(), name)); err != nil || target != want {
			t.Errorf("%s -> %q (%v), want %q", name, target, err, want)
		}
	}
}

func TestBootNothingInstalled(t *testing.T) {
	d, err := NewStore(t.TempDir()).Boot(time.Now())
	if err != nil || d.Installed {
		t.Errorf("decision = %+v, %v", d, err)
	}
}

// TestInstallStepsSurvivePowerCut: after each install step the state on disk
// names a complete slot to start.
func TestInstallStepsSurvivePowerCut(t *testing.T) {
	for _, step := range []string{StepStaged, StepSwitched} {
		t.Run(step, func(t *testing.T) {
			g := newGateway(t)
			g.install(t, makeBundle(t, g.release, bundleSpec{version: "1"}))
			snapshot := t.TempDir()
			cut := func(s string) {
				if s == step {
					// The power cut: what is on disk now is all there is.
					copyTree(t, g.store.Dir(), snapshot)
				}
			}
			g.install(t, makeBundle(t, g.release, bundleSpec{version: "2"}), WithStepHook(cut))
			cutStore := &Store{dir: snapshot}
			d, err := cutStore.Boot(time.Now())
			if err != nil {
				t.Fatal(err)
			}
			want := map[string]string{StepStaged: "1", StepSwitched: "2"}[step]
			if d.Version != want || cutStore.slotComplete(d.Slot) != nil {
				t.Errorf("after a cut at %s: %+v, want version %s", step, d, want)
			}
		})
	}
}

// copyTree copies files and symlinks (not following them).
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.Walk(src, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		out := filepath.Join(dst, rel)
		switch {
		case info.Mode()&os.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			return os.Symlink(target, out)
		case info.IsDir():
			return os.MkdirAll(out, info.Mode().Perm())
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(out, data, info.Mode().Perm())
	})
	if err != nil {
		t.Fatal(err)
	}
}
