// Package fieldgatetest runs the fieldgate supervisor binary with collector
// images against real peers (internal/testpeer) for the end-to-end, fault and
// field-life suites: it builds the binaries and image archives once per test
// binary, starts and kills `fieldgate run`, reads its /status, and records
// every MQTT batch to check seq continuity. It is imported by tests only.
package fieldgatetest

import (
	"os"
	"path/filepath"
	goruntime "runtime"
	"testing"

	"fieldgate/firmware/ociimage"
	"fieldgate/internal/testpeer"
)

// build runs `go build` of pkg with ldflags once per test binary
// (testpeer.GoBuildFlags: static, CGO_ENABLED=0, so the binaries run on the
// images' empty base) and returns the binary's path.
func build(t testing.TB, pkg, ldflags string) string {
	t.Helper()
	return testpeer.GoBuildFlags(t, pkg, ldflags)
}

// Cleanup removes the binaries built by this test binary; call it from
// TestMain after m.Run.
func Cleanup() { testpeer.CleanBuilds() }

// Fieldgate builds the fieldgate command.
func Fieldgate(t testing.TB) string { return FieldgateVersion(t, "") }

// FieldgateVersion builds the fieldgate command reporting version ("" keeps
// the default): the firmware update tests need several.
func FieldgateVersion(t testing.TB, version string) string {
	return build(t, "fieldgate/gateway/cmd/fieldgate", versionFlags(version))
}

// Sleeper builds the stand-in collector (internal/fieldgatetest/sleeper).
func Sleeper(t testing.TB) string {
	return build(t, "fieldgate/internal/fieldgatetest/sleeper", "")
}

// Collector builds a collector command (modbus-collector, opcua-collector)
// reporting version in its status ("" keeps the default).
func Collector(t testing.TB, name, version string) string {
	return build(t, "fieldgate/collectors/cmd/"+name, versionFlags(version))
}

func versionFlags(version string) string {
	if version == "" {
		return ""
	}
	return "-X main.version=" + version
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
