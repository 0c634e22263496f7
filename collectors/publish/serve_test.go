package publish

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"fieldgate/internal/testpeer"
)

type sourceFunc func(ctx context.Context) error

func (f sourceFunc) Run(ctx context.Context) error { return f(ctx) }

func TestServe(t *testing.T) {
	engineFailed := errors.New("serial port \"/dev/ttyUSB0\": no such file or directory")
	block := make(chan struct{})
	defer close(block)
	tests := []struct {
		name     string
		src      sourceFunc
		cancel   bool
		deadline time.Duration
		want     string
	}{
		{"engine failure stops the publisher", func(context.Context) error { return engineFailed }, false, 5 * time.Second, engineFailed.Error()},
		{"cancel stops both", func(ctx context.Context) error { <-ctx.Done(); return nil }, true, 5 * time.Second, ""},
		{"an engine ignoring the stop hits the deadline", func(context.Context) error { <-block; return nil }, true, 300 * time.Millisecond, "not finished within"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// No broker listens there: the publisher keeps retrying its first
			// connection until it is stopped.
			dir := t.TempDir()
			p, err := New(Config{Broker: fmt.Sprintf("127.0.0.1:%d", testpeer.FreePort(t)), GatewayID: "g", CollectorName: "c", DataDir: dir}, discard())
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if tc.cancel {
				cancel()
			}
			done := make(chan error, 1)
			go func() { done <- p.Serve(ctx, tc.src, tc.deadline) }()
			select {
			case err := <-done:
				if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
					t.Errorf("Serve = %v, want %q", err, tc.want)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Serve did not return")
			}
			// Serve may return before the publisher has closed its queue
			// (the deadline case); it says "offline" in its status file last.
			testpeer.WaitFor(t, 10*time.Second, "the publisher to stop", func() bool {
				fs, ok := readStatusFile(dir)
				return ok && fs.State == "offline"
			})
		})
	}
}
