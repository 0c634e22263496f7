package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"fieldgate/gateway/supervisor"
	"fieldgate/internal/testpeer"
)

type fakeSource struct{ st supervisor.Status }

func (f fakeSource) Status() supervisor.Status { return f.st }

func testStatus() supervisor.Status {
	at := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	return supervisor.Status{
		GatewayID: "gw1", Version: "v1", ReloadsOK: 2, ReloadsFailed: 1,
		LastReloadError: "gateway.yaml:7: unknown key \"x\"",
		Collectors: []supervisor.CollectorStatus{
			{Name: "modbus-line3", Image: "fieldgate/collector-modbus:latest", ImageDigest: "sha256:abc",
				ConfiguredDigest: "sha256:abc", DigestMatches: true,
				State: supervisor.StateRunning, Restarts: 3, Pid: 4242, StartedAt: &at, SpecHash: "ff",
				LastExit: &supervisor.Exit{Code: 137, At: at},
				Report: json.RawMessage(`{"state":"degraded","degraded":"queue append: no space left on device",` +
					`"resumed":{"after_seq":1041,"lost_from":1042,"lost_to":1187,"next_seq":1188,"reason":"unclean stop"},` +
					`"queue":{"pending":12,"bytes":3400,"dropped":2,"rejected":0,"corrupt":1,"append_failed":7},"mqtt":{"connected":true},` +
					`"poll":{"cycles":400,"overruns":31,"skipped":5,"late_p50_ms":0.5,"late_p99_ms":2.5,"late_max_ms":9}}`)},
			{Name: "opcua-boiler", State: supervisor.StateCrashLoop, LastError: "boom"},
		},
	}
}

func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
	b, _ := io.ReadAll(rec.Result().Body)
	return rec.Code, string(b)
}

func TestStatusJSON(t *testing.T) {
	h := Handler(fakeSource{testStatus()}, testToken)
	code, body := get(t, h, "/status")
	if code != 200 {
		t.Fatalf("status %d", code)
	}
	var v map[string]any
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		t.Fatal(err)
	}
	if v["gateway_id"] != "gw1" || v["last_reload_error"] == "" {
		t.Errorf("status = %s", body)
	}
	c := v["collectors"].([]any)[0].(map[string]any)
	for _, k := range []string{"name", "image", "image_digest", "configured_digest", "digest_matches", "state", "restarts", "last_exit", "started_at", "pid", "spec_hash", "last_error"} {
		if _, ok := c[k]; !ok {
			t.Errorf("collector lacks %q: %s", k, body)
		}
	}
	if c["last_exit"].(map[string]any)["code"] != 137.0 || c["pid"] != 4242.0 {
		t.Errorf("collector = %v", c)
	}
}

func TestMetricsAndHealth(t *testing.T) {
	h := Handler(fakeSource{testStatus()}, testToken)
	if code, body := get(t, h, "/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz = %d %q", code, body)
	}
	code, body := get(t, h, "/metrics")
	if code != 200 {
		t.Fatalf("/metrics %d", code)
	}
	if strings.Contains(body, `fieldgate_collector_queue_pending{collector="opcua-boiler"}`) {
		t.Errorf("queue figures exported for a collector without a report")
	}
	for _, want := range []string{
		`fieldgate_collector_restarts_total{collector="modbus-line3"} 3`,
		`fieldgate_collector_image_current{collector="modbus-line3"} 1`,
		`fieldgate_collector_image_current{collector="opcua-boiler"} 0`,
		`fieldgate_collector_up{collector="modbus-line3"} 1`,
		`fieldgate_collector_up{collector="opcua-boiler"} 0`,
		`fieldgate_collector_state{collector="opcua-boiler",state="crashloop"} 1`,
		`fieldgate_collector_last_exit_code{collector="modbus-line3"} 137`,
		`fieldgate_reload_total{result="error"} 1`,
		`fieldgate_reload_total{result="ok"} 2`,
		`fieldgate_collector_queue_pending{collector="modbus-line3"} 12`,
		`fieldgate_collector_queue_bytes{collector="modbus-line3"} 3400`,
		`fieldgate_collector_queue_dropped_total{collector="modbus-line3"} 2`,
		`fieldgate_collector_queue_rejected_total{collector="modbus-line3"} 0`,
		`fieldgate_collector_queue_corrupt_total{collector="modbus-line3"} 1`,
		`fieldgate_collector_queue_append_failed_total{collector="modbus-line3"} 7`,
		`fieldgate_collector_degraded{collector="modbus-line3"} 1`,
		`fieldgate_collector_resumed_lost_seqs{collector="modbus-line3"} 146`,
		`fieldgate_collector_poll_overruns_total{collector="modbus-line3"} 31`,
		`fieldgate_collector_poll_skipped_total{collector="modbus-line3"} 5`,
		`fieldgate_collector_poll_late_p99_seconds{collector="modbus-line3"} 0.0025`,
		`go_goroutines`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

func TestRunServesAndStops(t *testing.T) {
	s, err := New("127.0.0.1:0", fakeSource{testStatus()}, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	resp, err := http.Get("http://" + s.Addr() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("status %d", resp.StatusCode)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
	if _, err := New("nope", fakeSource{}, nil, ""); err == nil {
		t.Error("bad address accepted")
	}
}

// fakeController is a StatusSource and Controller: a stop or start of
// "modbus-line3" succeeds, anything else is unknown; down makes every call
// fail as when Run is not running.
type fakeController struct {
	fakeSource
	down  bool
	calls []string
}

func (f *fakeController) do(op, name string) (supervisor.CollectorStatus, error) {
	f.calls = append(f.calls, op+" "+name)
	switch {
	case f.down:
		return supervisor.CollectorStatus{}, supervisor.ErrNotRunning
	case name != "modbus-line3":
		return supervisor.CollectorStatus{}, fmt.Errorf("%w %q (configured: modbus-line3)", supervisor.ErrUnknownCollector, name)
	case op == "stop":
		return supervisor.CollectorStatus{Name: name, State: supervisor.StateStopped}, nil
	}
	return supervisor.CollectorStatus{Name: name, State: supervisor.StateRunning}, nil
}

func (f *fakeController) StopCollector(_ context.Context, name string) (supervisor.CollectorStatus, error) {
	return f.do("stop", name)
}

func (f *fakeController) StartCollector(_ context.Context, name string) (supervisor.CollectorStatus, error) {
	return f.do("start", name)
}

func TestStopStart(t *testing.T) {
	post := func(h http.Handler, path string) (int, string) {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest("POST", path, nil)
		req.Header.Set("Authorization", "Bearer "+testToken)
		h.ServeHTTP(rec, req)
		b, _ := io.ReadAll(rec.Result().Body)
		return rec.Code, string(b)
	}
	fc := &fakeController{fakeSource: fakeSource{testStatus()}}
	h := Handler(fc, testToken)
	for _, tt := range []struct {
		path  string
		code  int
		field string // "state" or "error"
		want  string
	}{
		{"/collectors/modbus-line3/stop", 200, "state", "stopped"},
		{"/collectors/modbus-line3/start", 200, "state", "running"},
		{"/collectors/nope/stop", 404, "error", `unknown collector "nope" (configured: modbus-line3)`},
	} {
		code, body := post(h, tt.path)
		var v map[string]any
		if err := json.Unmarshal([]byte(body), &v); err != nil || code != tt.code || v[tt.field] != tt.want {
			t.Errorf("POST %s = %d %s, want %d %s=%q", tt.path, code, body, tt.code, tt.field, tt.want)
		}
	}
	if code, _ := get(t, h, "/collectors/modbus-line3/stop"); code != http.StatusMethodNotAllowed {
		t.Errorf("GET of stop = %d, want 405", code)
	}
	fc.down = true
	if code, _ := post(h, "/collectors/modbus-line3/stop"); code != http.StatusServiceUnavailable {
		t.Errorf("stop while not running = %d, want 503", code)
	}
	if len(fc.calls) != 4 {
		t.Errorf("calls %v", fc.calls)
	}
	// A source that cannot control has no such endpoints.
	if code, _ := post(Handler(fakeSource{testStatus()}, testToken), "/collectors/modbus-line3/stop"); code != http.StatusNotFound {
		t.Errorf("stop without a controller = %d, want 404", code)
	}
}

func TestClient(t *testing.T) {
	fc := &fakeController{fakeSource: fakeSource{testStatus()}}
	srv := httptest.NewServer(Handler(fc, testToken))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	ctx := context.Background()
	st, raw, err := FetchStatus(ctx, addr)
	if err != nil || st.GatewayID != "gw1" || len(st.Collectors) != 2 || !json.Valid(raw) {
		t.Errorf("FetchStatus = %+v, %v", st, err)
	}
	if c, err := Control(ctx, addr, testToken, "stop", "modbus-line3"); err != nil || c.State != supervisor.StateStopped {
		t.Errorf("stop = %+v, %v", c, err)
	}
	if _, err := Control(ctx, addr, testToken, "stop", "nope"); err == nil || err.Error() != `stop "nope": unknown collector "nope" (configured: modbus-line3)` {
		t.Errorf("stop of an unknown collector: %v", err)
	}
	if _, err := Control(ctx, addr, testToken, "pause", "modbus-line3"); err == nil {
		t.Error("unknown operation accepted")
	}
	srv.Close()
	if _, _, err := FetchStatus(ctx, addr); !errors.Is(err, ErrNoSupervisor) || !strings.Contains(err.Error(), addr) {
		t.Errorf("closed server: %v", err)
	}
}

const testToken = "0123456789abcdef"

// TestControlNeedsToken: collectors share the host network, so the
// operator's endpoints refuse a request without the token, or with another
// one, and the controller is never called.
func TestControlNeedsToken(t *testing.T) {
	fc := &fakeController{fakeSource: fakeSource{testStatus()}}
	h := Handler(fc, testToken)
	for _, auth := range []string{"", "Bearer ", "Bearer wrong", "Basic " + testToken, testToken} {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest("POST", "/collectors/modbus-line3/stop", nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusUnauthorized {
			t.Errorf("Authorization %q: %d, want 401", auth, rec.Code)
		}
	}
	if len(fc.calls) != 0 {
		t.Errorf("controller called without the token: %v", fc.calls)
	}
	// No token configured: no operator endpoints at all.
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("POST", "/collectors/modbus-line3/stop", nil)
	req.Header.Set("Authorization", "Bearer ")
	Handler(fc, "").ServeHTTP(rec, req)
	if rec.Code != http.StatusNotFound || len(fc.calls) != 0 {
		t.Errorf("without a token: %d, calls %v; want 404 and none", rec.Code, fc.calls)
	}
}

// TestControlPeerUID: over loopback, the uid owning the client's socket
// decides without a token — root is let in, any other uid (a collector's) is
// refused, also with a wrong token.
func TestControlPeerUID(t *testing.T) {
	if os.Getuid() != 0 {
		testpeer.Require(t, "root")
	}
	fc := &fakeController{fakeSource: fakeSource{testStatus()}}
	srv := httptest.NewServer(Handler(fc, testToken))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	if _, err := Control(context.Background(), addr, "", "stop", "modbus-line3"); err != nil {
		t.Errorf("root without a token: %v", err)
	}
	// The test binary's own directory is root's alone: run a copy.
	dir, err := os.MkdirTemp("", "httpapi-peer-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	exe := filepath.Join(dir, "client")
	if b, err := os.ReadFile(os.Args[0]); err != nil || os.WriteFile(exe, b, 0o755) != nil || os.Chmod(dir, 0o755) != nil {
		t.Fatalf("copy the test binary: %v", err)
	}
	for _, uid := range []int{65534, 524288 + 42} {
		cmd := exec.Command(exe)
		cmd.Env = append(os.Environ(), "HTTPAPI_HELPER_ADDR="+addr)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}}
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), "not allowed") {
			t.Errorf("uid %d: err %v, output %s; want refused", uid, err, out)
		}
	}
	if len(fc.calls) != 1 {
		t.Errorf("calls %v, want only root's", fc.calls)
	}
}

// TestMain also serves as TestControlPeerUID's client, run as another uid:
// with HTTPAPI_HELPER_ADDR set it asks for a stop and exits 1 with the
// error when refused.
func TestMain(m *testing.M) {
	if addr := os.Getenv("HTTPAPI_HELPER_ADDR"); addr != "" {
		if _, err := Control(context.Background(), addr, "wrong", "stop", "modbus-line3"); err != nil {
			fmt.Println(err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func TestProcAddrForms(t *testing.T) {
	table := `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:ABEF 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1494436 2
   1: 0100007F:D431 0100007F:244D 01 00000000:00000000 00:00000000 00000000 524330        0 1494410 1
   2: 0000000000000000FFFF00000100007F:D432 0000000000000000FFFF00000100007F:244D 01 00000000:00000000 00:00000000 00000000  1000 0 1 1
   3: 00000000000000000000000001000000:D433 00000000000000000000000001000000:244D 01 00000000:00000000 00:00000000 00000000  0 0 1 1
`
	server := netip.MustParseAddrPort("127.0.0.1:9293")
	for _, tt := range []struct {
		remote string
		local  netip.AddrPort
		uid    uint32
		ok     bool
	}{
		{"127.0.0.1:54321", server, 524330, true},
		{"[::ffff:127.0.0.1]:54322", netip.MustParseAddrPort("[::ffff:127.0.0.1]:9293"), 1000, true},
		{"[::1]:54323", netip.MustParseAddrPort("[::1]:9293"), 0, true},
		{"127.0.0.1:1", server, 0, false},
	} {
		want := map[string]bool{}
		for _, f := range procAddrForms(netip.MustParseAddrPort(tt.remote)) {
			for _, g := range procAddrForms(tt.local) {
				if len(f) == len(g) {
					want[f+" "+g] = true
				}
			}
		}
		uid, ok := findSocketUID(strings.NewReader(table), want)
		if uid != tt.uid || ok != tt.ok {
			t.Errorf("%s: uid %d ok %v, want %d %v", tt.remote, uid, ok, tt.uid, tt.ok)
		}
	}
	if _, ok := peerUID(netip.MustParseAddrPort("192.0.2.1:5"), server); ok {
		t.Error("peerUID of a remote host: ok")
	}
}

func TestToken(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "supervisor")
	a, err := NewToken(dir)
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewToken(dir)
	if err != nil {
		t.Fatal(err)
	}
	if a == b || len(a) != 64 {
		t.Errorf("tokens %q, %q: want a new 64-hex token per start", a, b)
	}
	got, err := ReadToken(filepath.Join(dir, TokenFile))
	if err != nil || got != b {
		t.Errorf("ReadToken = %q, %v; want %q", got, err, b)
	}
	for _, p := range []string{dir, filepath.Join(dir, TokenFile)} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if perm := st.Mode().Perm(); perm&0o077 != 0 {
			t.Errorf("%s: mode %v, want no access for group or others", p, perm)
		}
	}
	// A link planted in place of the token is not followed.
	canary := filepath.Join(t.TempDir(), "canary")
	os.WriteFile(canary, []byte("canary\n"), 0o600)
	link := filepath.Join(t.TempDir(), "token")
	os.Symlink(canary, link)
	if _, err := ReadToken(link); err == nil {
		t.Error("ReadToken followed a symlink")
	}
	if _, err := ReadToken(filepath.Join(dir, "missing")); err == nil {
		t.Error("ReadToken of a missing file: no error")
	}
}
