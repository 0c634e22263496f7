package publish

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestPlaintextPasswordWarning: a password over tcp:// or ws:// is worth one
// warning at start, naming the broker and never the password.
func TestPlaintextPasswordWarning(t *testing.T) {
	pw := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pw, []byte("canary-pw\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		broker string
		warn   bool
	}{
		{"tcp://127.0.0.1:1883", true},
		{"ws://127.0.0.1:8080/mqtt", true},
		{"ssl://127.0.0.1:8883", false},
	} {
		var buf bytes.Buffer
		log := slog.New(slog.NewTextHandler(&buf, nil))
		p, err := New(Config{Broker: tc.broker, Username: "gw", PasswordFile: pw, GatewayID: "g",
			CollectorName: "c", DataDir: t.TempDir()}, log)
		if err != nil {
			t.Fatalf("New(%s): %v", tc.broker, err)
		}
		p.close()
		out := buf.String()
		if n := strings.Count(out, "unencrypted connection"); n != map[bool]int{true: 1, false: 0}[tc.warn] {
			t.Errorf("%s: %d warnings, want warn=%v; log:\n%s", tc.broker, n, tc.warn, out)
		}
		if strings.Contains(out, "canary-pw") {
			t.Errorf("%s: log carries the password:\n%s", tc.broker, out)
		}
	}
}
