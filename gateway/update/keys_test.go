package update

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"fieldgate/internal/testpeer"
)

func TestKeyring(t *testing.T) {
	dir := t.TempDir()
	a, b := newKey(t, t.TempDir(), "a"), newKey(t, t.TempDir(), "b")
	trust(t, dir, a)
	keys, err := LoadKeys(dir)
	if err != nil {
		t.Fatal(err)
	}
	msg := []byte(`{"version":"1"}`)
	sig := Sign(a.priv, msg, TrustedComment(time.Unix(0, 0), "manifest.json"))
	if file, err := keys.Verify(msg, sig); err != nil || file != filepath.Join(dir, "a.pub") {
		t.Errorf("verify: %q %v", file, err)
	}
	if _, err := keys.Verify([]byte(`{"version":"2"}`), sig); !errors.Is(err, ErrBadSignature) {
		t.Errorf("altered message: %v", err)
	}
	if _, err := keys.Verify(msg, Sign(b.priv, msg, "")); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("unknown key: %v", err)
	}
	if _, err := keys.Verify(msg, []byte("not a signature")); !errors.Is(err, ErrBadSignature) {
		t.Errorf("garbage signature: %v", err)
	}
	// A comment changed after signing breaks the signature too.
	forged := strings.Replace(string(sig), "timestamp:0", "timestamp:1", 1)
	if _, err := keys.Verify(msg, []byte(forged)); !errors.Is(err, ErrBadSignature) {
		t.Errorf("forged trusted comment: %v", err)
	}

	writeFile(t, filepath.Join(dir, "junk.pub"), "hello\n", 0o644)
	if _, err := LoadKeys(dir); err == nil || !strings.Contains(err.Error(), "junk.pub") {
		t.Errorf("junk key file: %v", err)
	}
	if _, err := LoadKeys(t.TempDir()); !errors.Is(err, ErrNoKeys) {
		t.Errorf("empty dir: %v", err)
	}
	if _, err := GenerateKey(filepath.Join(dir, "x.key"), filepath.Join(dir, "a.pub"), ""); err == nil {
		t.Error("GenerateKey overwrote a public key")
	}
	if _, err := os.Stat(filepath.Join(dir, "x.key")); err == nil {
		t.Error("GenerateKey left a secret key without its public key")
	}
	st, err := os.Stat(filepath.Join(filepath.Dir(a.pub), "a.key"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("secret key mode: %v %v", st.Mode(), err)
	}
}

// TestMinisignInterop: the stock minisign tool (Debian's) and fieldgate
// verify each other's signatures, and read each other's keys.
func TestMinisignInterop(t *testing.T) {
	testpeer.Require(t, "minisign")
	dir := t.TempDir()
	minisign := func(args ...string) string {
		t.Helper()
		out, err := exec.Command("minisign", args...).CombinedOutput()
		if err != nil {
			t.Fatalf("minisign %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	manifest := filepath.Join(dir, ManifestFile)
	writeFile(t, manifest, `{"format":1,"product":"fieldgate","version":"7"}`+"\n", 0o644)

	t.Run("signed by minisign, verified by fieldgate", func(t *testing.T) {
		pub, sec := filepath.Join(dir, "tool.pub"), filepath.Join(dir, "tool.key")
		minisign("-G", "-W", "-p", pub, "-s", sec)
		minisign("-S", "-s", sec, "-m", manifest, "-x", manifest+".tool-sig")
		keys := filepath.Join(dir, "keys-tool")
		trust(t, keys, testKey{pub: pub})
		ring, err := LoadKeys(keys)
		if err != nil {
			t.Fatal(err)
		}
		msg, _ := os.ReadFile(manifest)
		sig, _ := os.ReadFile(manifest + ".tool-sig")
		if _, err := ring.Verify(msg, sig); err != nil {
			t.Errorf("fieldgate rejects minisign's signature: %v\n%s", err, sig)
		}
		if _, err := ring.Verify(append(msg, ' '), sig); !errors.Is(err, ErrBadSignature) {
			t.Errorf("altered file: %v", err)
		}
		// fieldgate signs with minisign's secret key; minisign verifies.
		key, err := LoadPrivateKey(sec, "")
		if err != nil {
			t.Fatal(err)
		}
		if err := SignFile(manifest, key, time.Now()); err != nil {
			t.Fatal(err)
		}
		minisign("-V", "-p", pub, "-m", manifest)
	})

	t.Run("signed by fieldgate, verified by minisign", func(t *testing.T) {
		k := newKey(t, filepath.Join(dir, "fg"), "release")
		if err := SignFile(manifest, k.priv, time.Unix(1764345600, 0)); err != nil {
			t.Fatal(err)
		}
		out := minisign("-V", "-H", "-p", k.pub, "-m", manifest)
		if !strings.Contains(out, "Signature and comment signature verified") || !strings.Contains(out, "file:manifest.json") {
			t.Errorf("minisign -V said:\n%s", out)
		}
		// minisign signs with fieldgate's secret key; fieldgate verifies.
		minisign("-S", "-W", "-s", filepath.Join(dir, "fg", "release.key"), "-m", manifest)
		ring, err := LoadKeys(filepath.Join(dir, "fg"))
		if err != nil {
			t.Fatal(err)
		}
		msg, _ := os.ReadFile(manifest)
		sig, _ := os.ReadFile(manifest + ".minisig")
		if _, err := ring.Verify(msg, sig); err != nil {
			t.Errorf("fieldgate rejects minisign's signature with fieldgate's key: %v", err)
		}
		// And minisign refuses a tampered file.
		writeFile(t, manifest, `{"format":1,"product":"fieldgate","version":"8"}`+"\n", 0o644)
		if out, err := exec.Command("minisign", "-V", "-p", k.pub, "-m", manifest).CombinedOutput(); err == nil {
			t.Errorf("minisign verified a tampered file:\n%s", out)
		}
	})
}
