// Package fieldgatetest runs the fieldgate supervisor binary with collector
// images against real peers (internal/testpeer) for the end-to-end, fault and
// field-life suites: it builds the binaries and image archives once per test
// binary, starts and kills `fieldgate run`, reads its /status, and records
// every MQTT batch to check seq continuity. It is imported by tests only.
package fieldgatetest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"sync"
	"testing"

	"fieldgate/firmware/ociimage"
)

var builds struct {
	sync.Mutex
	dir string
	out map[string]string // key -> binary
	err map[string]error
}

// build runs `go build` of pkg once per test binary and key (flags differ
// per key) and returns the binary's path. Binaries are static
// (CGO_ENABLED=0): they run on the images' empty base.
func build(t testing.TB, key, pkg string, ldflags string) string {
	t.Helper()
	builds.Lock()
	defer builds.Unlock()
	if builds.out == nil {
		builds.out, builds.err = map[string]string{}, map[string]error{}
	}
	if out, ok := builds.out[key]; ok {
		return out
	}
	if err, ok := builds.err[key]; ok {
		t.Fatal(err)
	}
	if builds.dir == "" {
		dir, err := os.MkdirTemp("", "fg-test-bin-")
		if err != nil {
			t.Fatal(err)
		}
		builds.dir = dir
	}
	out := filepath.Join(builds.dir, key)
	args := []string{"build", "-o", out}
	if ldflags != "" {
		args = append(args, "-ldflags", ldflags)
	}
	cmd := exec.Command("go", append(args, pkg)...)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		builds.err[key] = fmt.Errorf("go build %s: %v\n%s", pkg, err, b)
		t.Fatal(builds.err[key])
	}
	builds.out[key] = out
	return out
}

// Cleanup removes the binaries built by this test binary; call it from
// TestMain after m.Run.
func Cleanup() {
	builds.Lock()
	defer builds.Unlock()
	if builds.dir != "" {
		os.RemoveAll(builds.dir)
		builds.dir, builds.out, builds.err = "", nil, nil
	}
}

// Fieldgate builds the fieldgate command.
func Fieldgate(t testing.TB) string {
	return build(t, "fieldgate", "fieldgate/gateway/cmd/fieldgate", "")
}

// Sleeper builds the stand-in collector (internal/fieldgatetest/sleeper).
func Sleeper(t testing.TB) string {
	return build(t, "sleeper", "fieldgate/internal/fieldgatetest/sleeper", "")
}

// Collector builds a collector command (modbus-collector, opcua-collector)
// reporting version in its status ("" keeps the default).
func Collector(t testing.TB, name, version string) string {
	ld := ""
	if version != "" {
		ld = "-X main.version=" + version
	}
	return build(t, name+"-"+version, "fieldgate/collectors/cmd/"+name, ld)
}

// ImageArchive packs binary into an OCI archive of name with tags (the
// first also its version label, so archives of other versions differ) for
// this host's platform, with the builder of `make images`, at path; it
// returns the image's digest.
func ImageArchive(t testing.TB, path, name, binary string, tags ...string) string {
	t.Helper()
	platform := "linux/" + goruntime.GOARCH
	if goruntime.GOARCH == "arm" {
		platform = "linux/arm/v7"
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	res, err := ociimage.Build(ociimage.Config{
		Name:     name,
		Tags:     tags,
		Binaries: map[string]string{platform: binary},
	}, path)
	if err != nil {
		t.Fatal(err)
	}
	return res.IndexDigest
}
