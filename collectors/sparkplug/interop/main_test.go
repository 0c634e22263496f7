package interop

import (
	"os"
	"testing"

	"fieldgate/internal/testpeer"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testpeer.CleanBuilds()
	os.Exit(code)
}
