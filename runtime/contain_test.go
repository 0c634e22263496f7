package runtime_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"fieldgate/internal/testpeer"
	fgrt "fieldgate/runtime"
)

// probeReport is report.json: what a compromised collector gets inside.
type probeReport struct {
	UID         int               `json:"uid"`
	GID         int               `json:"gid"`
	Groups      []int             `json:"groups"`
	ProcStatus  map[string]string `json:"proc_status"`
	RawSocket   string            `json:"raw_socket"`
	Mount       string            `json:"mount"`
	SetuidRoot  string            `json:"setuid_root"`
	TmpExec     string            `json:"tmp_exec"`
	TmpWrite    string            `json:"tmp_write"`
	RootfsWrite string            `json:"rootfs_write"`
	Config      string            `json:"config"`
	ConfigError string            `json:"config_error"`
	Secret      string            `json:"secret"`
	SecretError string            `json:"secret_error"`
	DataDirMode string            `json:"data_dir_mode"`
}

// runProbe creates and starts spec, returns its report and pid, and stops it
// at the end of the test.
func runProbe(t *testing.T, rt *fgrt.Runtime, spec fgrt.Spec, data string) (probeReport, uint32) {
	t.Helper()
	ctx := context.Background()
	if _, err := rt.Create(ctx, spec); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rt.Stop(context.Background(), spec.ID, time.Second) })
	info, err := rt.Start(ctx, spec.ID)
	if err != nil {
		t.Fatal(err)
	}
	var rep probeReport
	raw := waitFile(t, filepath.Join(data, "report.json"))
	if err := json.Unmarshal([]byte(raw), &rep); err != nil {
		t.Fatalf("report %q: %v", raw, err)
	}
	return rep, info.Pid
}

// writeSecret writes a root-only 0600 file, as an operator keeps a broker
// password, and returns its path.
func writeSecret(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "mqtt.pass")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestContainedByDefault runs the probe as a collector that is not
// privileged — with a serial line (a pty owned by group dialout, mode 0660,
// as udev makes a USB adapter), a 0600 root secret and a 0600 config — and
// checks from inside what a compromised collector could do.
func TestContainedByDefault(t *testing.T) {
	peer, _ := setup(t)
	private := filepath.Join(t.TempDir(), "private")
	rt := newRuntime(t, peer, fgrt.WithPrivateDir(private))
	const id = "probe-contained"
	slave, _ := testpeer.PtyPair(t)
	spec, data := probeSpec(t, id, "PROBE_DEVICE=/dev/ttyUSB0", "PROBE_SECRET=/etc/fieldgate/mqtt/password")
	spec.Devices = []fgrt.Device{{Host: slave, Container: "/dev/ttyUSB0"}}
	secret := writeSecret(t, "s3cret-canary")
	spec.Mounts = append(spec.Mounts, fgrt.Mount{Host: secret, Container: "/etc/fieldgate/mqtt/password", ReadOnly: true})
	if err := os.Chmod(spec.Mounts[0].Host, 0o600); err != nil { // the config file, as the supervisor writes it
		t.Fatal(err)
	}
	rep, pid := runProbe(t, rt, spec, data)
	want := fgrt.DefaultUser(id)
	t.Logf("inside: %+v", rep)

	if rep.UID == 0 || rep.UID != int(want.UID) || rep.GID != int(want.GID) {
		t.Errorf("uid:gid inside %d:%d, want %d:%d (not root)", rep.UID, rep.GID, want.UID, want.GID)
	}
	if serial := testpeer.SerialGroup(); !slices.Contains(rep.Groups, testpeer.Atoi(t, serial)) {
		t.Errorf("groups %v lack the serial line's group %s", rep.Groups, serial)
	}
	for k, v := range map[string]string{"CapEff": "0000000000000000", "CapPrm": "0000000000000000", "CapBnd": "0000000000000000", "CapAmb": "0000000000000000", "NoNewPrivs": "1", "Seccomp": "2"} {
		if rep.ProcStatus[k] != v {
			t.Errorf("%s = %q inside, want %q", k, rep.ProcStatus[k], v)
		}
	}
	for what, got := range map[string]string{"raw socket": rep.RawSocket, "mount": rep.Mount, "setuid(0)": rep.SetuidRoot} {
		if !strings.Contains(got, "operation not permitted") {
			t.Errorf("%s: %q, want operation not permitted", what, got)
		}
	}
	if !strings.Contains(rep.TmpExec, "permission denied") {
		t.Errorf("running a program from /tmp: %q, want permission denied (noexec)", rep.TmpExec)
	}
	if rep.TmpWrite != "" {
		t.Errorf("writing /tmp: %q, want success", rep.TmpWrite)
	}
	if !strings.Contains(rep.RootfsWrite, "read-only file system") {
		t.Errorf("writing the root fs: %q, want read-only file system", rep.RootfsWrite)
	}
	if rep.Config != "transport: tcp\n" || rep.Secret != "s3cret-canary" {
		t.Errorf("config %q (%s), secret %q (%s): both 0600 root files must be readable inside", rep.Config, rep.ConfigError, rep.Secret, rep.SecretError)
	}
	// The originals are untouched; the user reads its own 0400 copies.
	if st, err := os.Stat(secret); err != nil || st.Mode().Perm() != 0o600 || st.Sys().(*syscall.Stat_t).Uid != 0 {
		t.Errorf("secret on the host: %v, %v; want root's 0600 file as it was", st.Mode(), err)
	}
	// The data dir belongs to the collector's user alone.
	var st unix.Stat_t
	if err := unix.Stat(data, &st); err != nil || st.Uid != want.UID || st.Mode&0o777 != 0o700 || rep.DataDirMode != "0700" {
		t.Errorf("data dir owner %d mode %#o (inside %s), want %d and 0700", st.Uid, st.Mode&0o777, rep.DataDirMode, want.UID)
	}
	if got := cgroupFile(t, pid, "pids", "pids.max", "pids.max"); got != fmt.Sprint(fgrt.DefaultPidsLimit) {
		t.Errorf("pids.max %q, want %d", got, fgrt.DefaultPidsLimit)
	}
	// The serial line opens through its group (TestDevicesReachableInside
	// moves data across it).
	if got := waitFile(t, filepath.Join(data, "device-open")); got != "ok" {
		t.Fatalf("opening /dev/ttyUSB0 as uid %d: %s", rep.UID, got)
	}

	// Removing the container removes the copies of its secrets.
	if err := rt.Stop(context.Background(), id, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if copies, _ := filepath.Glob(filepath.Join(private, id, "*")); len(copies) != 0 {
		t.Errorf("copies left after the container was removed: %q", copies)
	}
}

// TestPrivilegedKeepsFullAccess: privileged: true is the product's mode for
// adapters and GPIO that need it — root, every capability, no seccomp — but
// /tmp stays noexec and the pids limit applies.
func TestPrivilegedKeepsFullAccess(t *testing.T) {
	_, rt := setup(t)
	spec, data := probeSpec(t, "probe-privileged")
	spec.Privileged = true
	rep, pid := runProbe(t, rt, spec, data)
	if rep.UID != 0 || rep.ProcStatus["Seccomp"] != "0" || rep.ProcStatus["CapEff"] == "0000000000000000" {
		t.Errorf("privileged: uid %d, status %v; want root with capabilities and no seccomp", rep.UID, rep.ProcStatus)
	}
	if rep.RawSocket != "" {
		t.Errorf("privileged raw socket: %q, want success", rep.RawSocket)
	}
	if !strings.Contains(rep.TmpExec, "permission denied") {
		t.Errorf("running a program from /tmp: %q, want permission denied (noexec)", rep.TmpExec)
	}
	if got := cgroupFile(t, pid, "pids", "pids.max", "pids.max"); got != fmt.Sprint(fgrt.DefaultPidsLimit) {
		t.Errorf("pids.max %q, want %d", got, fgrt.DefaultPidsLimit)
	}
}

// TestContainmentRefusals: what Create refuses for a container that is not
// privileged, each with an error that says what to do.
func TestContainmentRefusals(t *testing.T) {
	_, rt := setup(t)
	ctx := context.Background()

	t.Run("device only root can open", func(t *testing.T) {
		node := filepath.Join(t.TempDir(), "ttyS9")
		if err := unix.Mknod(node, unix.S_IFCHR|0o660, int(unix.Mkdev(1, 3))); err != nil {
			t.Fatal(err)
		}
		spec, _ := probeSpec(t, "probe-rootdev")
		spec.Devices = []fgrt.Device{{Host: node, Container: "/dev/ttyUSB0"}}
		_, err := rt.Create(ctx, spec)
		if err == nil || !strings.Contains(err.Error(), "udev rule") || !strings.Contains(err.Error(), "privileged: true") {
			t.Errorf("device root:root 0660: %v", err)
		}
		spec.Privileged = true
		if _, err := rt.Create(ctx, spec); err != nil {
			t.Errorf("privileged with the same device: %v", err)
		}
		_ = rt.Delete(ctx, spec.ID)
	})

	t.Run("unreadable secret without a private dir", func(t *testing.T) {
		spec, _ := probeSpec(t, "probe-noprivate")
		spec.Mounts = append(spec.Mounts, fgrt.Mount{Host: writeSecret(t, "x"), Container: "/etc/fieldgate/mqtt/password", ReadOnly: true})
		if _, err := rt.Create(ctx, spec); err == nil || !strings.Contains(err.Error(), "WithPrivateDir") {
			t.Errorf("0600 secret, no private dir: %v", err)
		}
	})

	t.Run("two containers, one uid", func(t *testing.T) {
		u := fgrt.User{UID: 600001, GID: 600001}
		a, _ := probeSpec(t, "probe-uid-a")
		b, _ := probeSpec(t, "probe-uid-b")
		a.User, b.User = &u, &u
		if _, err := rt.Create(ctx, a); err != nil {
			t.Fatal(err)
		}
		defer rt.Delete(ctx, a.ID)
		if _, err := rt.Create(ctx, b); err == nil || !strings.Contains(err.Error(), `"probe-uid-a"`) {
			t.Errorf("second container with uid %d: %v", u.UID, err)
		}
	})

	t.Run("log inside the writable mount", func(t *testing.T) {
		spec, data := probeSpec(t, "probe-loginside")
		spec.LogPath = filepath.Join(data, "logs", "collector.log")
		if _, err := rt.Create(ctx, spec); err == nil || !strings.Contains(err.Error(), "writable mount") {
			t.Errorf("log in the data dir: %v", err)
		}
		// Through a link to the data dir, too.
		link := filepath.Join(t.TempDir(), "via")
		if err := os.Symlink(data, link); err != nil {
			t.Fatal(err)
		}
		spec.LogPath = filepath.Join(link, "collector.log")
		if _, err := rt.Create(ctx, spec); err == nil || !strings.Contains(err.Error(), "resolves into the writable mount") {
			t.Errorf("log in the data dir through a link: %v", err)
		}
	})
}

func TestDefaultUser(t *testing.T) {
	seen := map[uint32]string{}
	for _, id := range []string{"modbus-line3", "opcua-boiler", "a", "b", "modbus-line4"} {
		u := fgrt.DefaultUser(id)
		if u.UID < 524288 || u.UID >= 524288+1<<24 || u.GID != u.UID {
			t.Errorf("DefaultUser(%q) = %+v, out of the container range", id, u)
		}
		if other, ok := seen[u.UID]; ok {
			t.Errorf("%q and %q share uid %d", id, other, u.UID)
		}
		seen[u.UID] = id
		if again := fgrt.DefaultUser(id); again != u {
			t.Errorf("DefaultUser(%q) not stable: %+v, %+v", id, u, again)
		}
	}
}
