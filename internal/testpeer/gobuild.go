package testpeer

import (
	"fmt"
	"os"
	"os/exec"
)

// GoBuild builds the package pkg (an import path of this module, e.g.
// fieldgate/gateway/cmd/fieldgate) as a static binary at out, with
// -ldflags ldflags when not empty (e.g. "-X main.version=2"), the way the
// release builds do (CGO_ENABLED=0, -trimpath).
func GoBuild(out, pkg, ldflags string) error {
	args := []string{"build", "-trimpath", "-o", out}
	if ldflags != "" {
		args = append(args, "-ldflags", ldflags)
	}
	cmd := exec.Command("go", append(args, pkg)...)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %v\n%s", pkg, err, b)
	}
	return nil
}
