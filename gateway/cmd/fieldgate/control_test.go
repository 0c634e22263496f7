package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"fieldgate/gateway/httpapi"
	"fieldgate/internal/testpeer"
)

func TestStopStartCommands(t *testing.T) {
	dir := t.TempDir()
	token, err := httpapi.NewToken(dir)
	if err != nil {
		t.Fatal(err)
	}
	tokenFile := filepath.Join(dir, httpapi.TokenFile)
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+token {
			t.Errorf("%s %s without the operator token", r.Method, r.URL.Path)
		}
		got = append(got, r.Method+" "+r.URL.Path)
		switch r.URL.Path {
		case "/collectors/m1/stop":
			w.Write([]byte(`{"name":"m1","state":"stopped"}`))
		case "/collectors/m1/start":
			w.Write([]byte(`{"name":"m1","state":"running","pid":42}`))
		default:
			w.WriteHeader(http.StatusNotFound)
			w.Write([]byte(`{"error":"unknown collector \"nope\" (configured: m1)"}`))
		}
	}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	free := fmt.Sprintf("127.0.0.1:%d", testpeer.FreePort(t)) // nobody listens

	for _, tt := range []struct {
		args  []string
		out   string
		err   string
		usage bool
	}{
		{args: []string{"stop", "m1", "--addr", addr, "--token-file", tokenFile}, out: "m1: stopped\n"},
		{args: []string{"start", "--addr", addr, "--token-file", tokenFile, "m1"}, out: "m1: running (pid 42)\n"},
		{args: []string{"stop", "nope", "--addr", addr, "--token-file", tokenFile}, err: `stop "nope": unknown collector "nope" (configured: m1)`},
		{args: []string{"stop", "m1", "--addr", free, "--token-file", tokenFile}, err: "no fieldgate supervisor answers at " + free},
		{args: []string{"stop", "m1", "--addr", addr, "--token-file", filepath.Join(dir, "missing")}, err: `operator token "` + filepath.Join(dir, "missing") + `"`},
		{args: []string{"stop", "--addr", addr}, err: "stop: want one collector name, got 0 arguments", usage: true},
	} {
		var out, errOut bytes.Buffer
		err := run(context.Background(), tt.args, &out, &errOut)
		switch {
		case tt.err == "" && (err != nil || out.String() != tt.out):
			t.Errorf("%v: out %q err %v; want %q", tt.args, out.String(), err, tt.out)
		case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
			t.Errorf("%v: err %v; want %q", tt.args, err, tt.err)
		}
		var ee *exitError
		if tt.usage && (!errors.As(err, &ee) || ee.code != 2) {
			t.Errorf("%v: %v is not a usage error", tt.args, err)
		}
	}
	if want := "POST /collectors/m1/stop,POST /collectors/m1/start,POST /collectors/nope/stop"; strings.Join(got, ",") != want {
		t.Errorf("requests %v, want %s", got, want)
	}
}
