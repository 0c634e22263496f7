package opcua

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"fieldgate/collectors/configfile"
)

// FuzzParse feeds arbitrary files to the config parser: it must never
// panic, and every rejection must be a *configfile.Errors with lines.
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.yml")
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("opcua:\n  auth: anonymous\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse("f.yml", data)
		if err == nil {
			// Accepted configs are complete enough to build an engine's
			// tag list from.
			if c.Endpoint == "" || len(c.Nodes) == 0 {
				t.Fatalf("accepted config without endpoint or nodes: %q", data)
			}
			return
		}
		var errs *configfile.Errors
		if !errors.As(err, &errs) || len(errs.List) == 0 {
			t.Fatalf("Parse error %T %v, want *configfile.Errors", err, err)
		}
	})
}
