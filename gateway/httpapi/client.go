package httpapi

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"fieldgate/gateway/supervisor"
)

// Bounds of the client calls: /status answers at once; a stop waits for the
// task to stop (SIGTERM, SIGKILL after 10 s) and a start for its first try.
const (
	statusTimeout  = 5 * time.Second
	controlTimeout = 90 * time.Second
	maxAnswerBytes = 16 << 20
)

// ErrNoSupervisor is wrapped when nothing answers at the address.
var ErrNoSupervisor = fmt.Errorf("no fieldgate supervisor answers")

// FetchStatus reads /status of the supervisor at addr (HOST:PORT); it also
// returns the raw JSON.
func FetchStatus(ctx context.Context, addr string) (supervisor.Status, []byte, error) {
	var st supervisor.Status
	raw, err := call(ctx, statusTimeout, http.MethodGet, addr, "/status", "")
	if err != nil {
		return st, nil, err
	}
	if err := json.Unmarshal(raw, &st); err != nil {
		return st, nil, fmt.Errorf("status from %s: %w", addr, err)
	}
	return st, raw, nil
}

// Control asks the supervisor at addr to stop or start (op) collector name,
// proving itself with the operator token, and returns the collector's
// status; the supervisor's error (an unknown name lists the configured
// ones) is returned as it is.
func Control(ctx context.Context, addr, token, op, name string) (supervisor.CollectorStatus, error) {
	var st supervisor.CollectorStatus
	if op != "stop" && op != "start" {
		return st, fmt.Errorf("unknown operation %q (valid: stop, start)", op)
	}
	raw, err := call(ctx, controlTimeout, http.MethodPost, addr, "/collectors/"+url.PathEscape(name)+"/"+op, token)
	if err != nil {
		return st, fmt.Errorf("%s %q: %w", op, name, err)
	}
	if err := json.Unmarshal(raw, &st); err != nil {
		return st, fmt.Errorf("%s %q: answer from %s: %w", op, name, addr, err)
	}
	return st, nil
}

// call makes one request (with the operator token when set) and returns the
// body of a 200 answer; another answer is an error with the body's ErrorBody
// message or the status.
func call(ctx context.Context, timeout time.Duration, method, addr, path, token string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, "http://"+addr+path, nil)
	if err != nil {
		return nil, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w at %s: %w", ErrNoSupervisor, addr, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswerBytes))
	if err != nil {
		return nil, fmt.Errorf("read answer from %s: %w", addr, err)
	}
	if resp.StatusCode != http.StatusOK {
		var e ErrorBody
		if json.Unmarshal(raw, &e) == nil && e.Error != "" {
			return nil, fmt.Errorf("%s", e.Error)
		}
		return nil, fmt.Errorf("%s %s from %s: %s", method, path, addr, resp.Status)
	}
	return raw, nil
}
