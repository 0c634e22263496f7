package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"fieldgate/gateway/update"
	"fieldgate/internal/testpeer"
)

// TestUpdateCommands drives `fieldgate bundle` and `fieldgate update` as a
// release engineer and an operator would: make a key, write and sign a
// manifest, verify, install, show the status, refuse a tampered bundle,
// select the boot slot.
func TestUpdateCommands(t *testing.T) {
	dir := t.TempDir()
	cli := func(args ...string) (string, error) {
		var out, errOut bytes.Buffer
		err := run(context.Background(), args, &out, &errOut)
		return out.String() + errOut.String(), err
	}
	must := func(args ...string) string {
		t.Helper()
		out, err := cli(args...)
		if err != nil {
			t.Fatalf("fieldgate %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	keys := filepath.Join(dir, "etc/keys")
	if err := os.MkdirAll(keys, 0o755); err != nil {
		t.Fatal(err)
	}
	must("bundle", "keygen", "--key", filepath.Join(dir, "release.key"), "--pub", filepath.Join(keys, "release.pub"))

	makeBundle := func(version string) string {
		b := filepath.Join(dir, "bundle-"+version)
		for name, body := range map[string]string{"fieldgate": "#!/bin/sh\n", "install.sh": "#!/bin/sh\n", "gateway.yaml": "version: 1\n"} {
			if err := os.MkdirAll(b, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(b, name), []byte(body+version), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		out := must("bundle", "manifest", "--version", version, "--arch", update.HostArchitecture(), b)
		if !strings.Contains(out, fmt.Sprintf("fieldgate %s for %s, 3 files, 0 images pinned", version, update.HostArchitecture())) {
			t.Errorf("bundle manifest said: %s", out)
		}
		out = must("bundle", "sign", "--key", filepath.Join(dir, "release.key"), filepath.Join(b, "manifest.json"))
		if !strings.Contains(out, "manifest.json.minisig: signed with key ") {
			t.Errorf("bundle sign said: %s", out)
		}
		return b
	}
	v1, v2 := makeBundle("1"), makeBundle("2")
	if out := must("bundle", "verify", "--keys", keys, v1); !strings.Contains(out, "fieldgate 1 for") {
		t.Errorf("bundle verify said: %s", out)
	}

	config := filepath.Join(dir, "gateway.yaml")
	data := filepath.Join(dir, "data")
	if err := os.WriteFile(config, []byte(fmt.Sprintf("gateway: {data_dir: %s}\nupdate: {keys_dir: %s, boot_attempts: 2}\n", data, keys)), 0o644); err != nil {
		t.Fatal(err)
	}
	if out := must("update", "--config", config, "--status"); !strings.Contains(out, "no firmware installed") {
		t.Errorf("status before install: %s", out)
	}
	if out := must("update", "--config", config, v1); !strings.Contains(out, "first installation: version 1 is committed") {
		t.Errorf("first install said: %s", out)
	}

	testpeer.FlipByte(t, filepath.Join(v2, "install.sh"))
	before := testpeer.TreeSum(t, data)
	out, err := cli("update", "--config", config, v2)
	var ee *exitError
	if err == nil || errors.As(err, &ee) || !strings.Contains(err.Error(), "update refused, nothing changed: hash mismatch on install.sh") {
		t.Errorf("tampered bundle: %v (exit code 1 wanted)\n%s", err, out)
	}
	if after := testpeer.TreeSum(t, data); after != before {
		t.Errorf("a refused update changed the data dir:\n%s\n%s", before, after)
	}

	v3 := makeBundle("3")
	if out := must("update", "--config", config, v3); !strings.Contains(out, "version 3 is on trial") {
		t.Errorf("update said: %s", out)
	}
	out = must("update", "--config", config, "--status")
	for _, want := range []string{"state:     trial", "current:   3 (slot b)", "previous:  1 (slot a)", "trial:     version 3 replacing 1", "start 0 of 2"} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	for i, want := range []string{
		"starting version 3 (slot b) on trial, start 1 of 2",
		"starting version 3 (slot b) on trial, start 2 of 2",
		"rolled back to version 1 (slot a): version 3 was started 2 times without committing itself (boot counter)",
		"starting version 1 (slot a)",
	} {
		if out := must("update", "--config", config, "--boot"); !strings.Contains(out, want) {
			t.Errorf("boot %d said %q, want %q", i+1, out, want)
		}
	}
	out = must("update", "--config", config, "--status", "--json")
	if !strings.Contains(out, `"state": "rolled_back"`) {
		t.Errorf("status --json:\n%s", out)
	}
	// --wait returns once the trial ends: here a commit made meanwhile (by
	// the supervisor, in real life).
	v4 := makeBundle("4")
	store := update.NewStore(data)
	go func() {
		for {
			if st, err := store.State(); err == nil && st != nil && st.Trial != nil {
				store.Commit(st.Current, time.Now())
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	if out := must("update", "--config", config, "--wait", v4); !strings.Contains(out, "state:     committed") || !strings.Contains(out, "last:      committed 4 (from 1)") {
		t.Errorf("update --wait said:\n%s", out)
	}

	// A version on trial that rejects the config rolls itself back instead
	// of exiting 2 (which systemd would not restart).
	v5 := makeBundle("5")
	must("update", "--config", config, v5)
	good, _ := os.ReadFile(config)
	if err := os.WriteFile(config, append([]byte("version: 7\n"), good...), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err = cli("run", "--config", config)
	if err == nil || errors.As(err, &ee) && ee.code == 2 || !strings.Contains(err.Error(), "rolled back to the committed version") {
		t.Errorf("run of a trial version with a rejected config: %v\n%s", err, out)
	}
	if st, _ := store.Status(); st == nil || st.State != "rolled_back" || !strings.Contains(st.Last.Reason, "version 5 rejects "+config) {
		t.Errorf("after the rejected config: %+v", st)
	}
	if out, err := cli("run", "--config", config); !errors.As(err, &ee) || ee.code != 2 {
		t.Errorf("a committed version with a bad config must exit 2: %v\n%s", err, out)
	}

	// A broken update: section does not keep the service from starting.
	if err := os.WriteFile(config, []byte("update: {boot_attempts: many}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := cli("update", "--config", config, "--boot"); err != nil || !strings.Contains(out, "starting the current slot as it is") {
		t.Errorf("boot with a bad config: %v\n%s", err, out)
	}
}
