package config

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"fieldgate/collectors/configfile"
)

// FuzzParse: any input either loads or fails with a *configfile.Errors whose
// lines are inside the file; nothing panics.
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.yml")
	for _, p := range files {
		if data, err := os.ReadFile(p); err == nil {
			f.Add(data)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse("gw.yaml", data, WithStat(fakeStat), WithHostname(fakeHostname))
		if err == nil {
			if cfg.Version != Version {
				t.Fatalf("loaded with version %d", cfg.Version)
			}
			return
		}
		var ce *configfile.Errors
		if !errors.As(err, &ce) {
			t.Fatalf("error is %T: %v", err, err)
		}
		// YAML breaks lines at \n, \r\n, a lone \r, NEL, LS and PS.
		lines := 1
		for i, b := range data {
			if b == '\n' || b == '\r' && (i+1 == len(data) || data[i+1] != '\n') {
				lines++
			}
		}
		for _, br := range []string{"\u0085", "\u2028", "\u2029"} {
			lines += bytes.Count(data, []byte(br))
		}
		for _, e := range ce.List {
			if e.Line < 0 || e.Line > lines+1 {
				t.Fatalf("error at line %d of a %d-line file: %v", e.Line, lines, e)
			}
		}
	})
}
