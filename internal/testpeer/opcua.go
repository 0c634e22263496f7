package testpeer

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// OPCUAConfig configures the node-opcua test server
// (internal/testpeer/opcuaserver/server.mjs; its header lists the known
// variables it serves).
type OPCUAConfig struct {
	// Port to listen on; 0 picks a free one.
	Port int
	// Secure offers only Basic256Sha256 / SignAndEncrypt and refuses
	// anonymous users.
	Secure bool
	// User and Password are the one accepted user name token.
	User, Password string
	// Bulk adds Double variables ns=1;s=Bulk.0 … Bulk.<Bulk-1>, changing
	// every second.
	Bulk int
	// MaxItemsPerCall and MaxNodesPerRead are the server's OperationLimits
	// (0: the script's default, 500).
	MaxItemsPerCall, MaxNodesPerRead int
	// Oversize adds ns=1;s=Big.String (String of Oversize characters),
	// Big.Bytes (ByteString of Oversize bytes) and Big.Array
	// (Double[Oversize]).
	Oversize int
}

// OPCUAServer is a running node-opcua server.
type OPCUAServer struct {
	// Endpoint is "opc.tcp://127.0.0.1:PORT".
	Endpoint string
	// Port is the TCP port, kept across Stop/Start.
	Port int
	// CertFile is the server's certificate (PEM), to put into a client's
	// trust directory.
	CertFile string

	t    testing.TB
	args []string
	proc *Process
}

// OPCUAStartTimeout bounds the server's start-up: node-opcua loads the
// standard nodeset, which takes tens of seconds on a busy 2-core machine.
const OPCUAStartTimeout = 120 * time.Second

// opcuaServerDir is the directory of server.mjs and its node_modules.
func opcuaServerDir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "opcuaserver")
}

// OPCUA starts the node-opcua test server and waits until it listens. It
// calls Require(t, "node") and also requires the server's npm packages
// (scripts/setup-node.sh installs them): missing, the test is skipped, or
// fails under FIELDGATE_REQUIRE_ALL=1. The server is stopped when the test
// ends.
func OPCUA(t testing.TB, cfg OPCUAConfig) *OPCUAServer {
	t.Helper()
	Require(t, "node")
	dir := opcuaServerDir()
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "node-opcua", "package.json")); err != nil {
		Unavailable(t, "node-opcua", fmt.Sprintf("node-opcua is not installed in %s (run scripts/setup-node.sh)", dir))
	}
	if cfg.Port == 0 {
		cfg.Port = FreePort(t)
	}
	args := []string{filepath.Join(dir, "server.mjs"), "--port", strconv.Itoa(cfg.Port), "--pki", filepath.Join(t.TempDir(), "pki")}
	if cfg.Secure {
		args = append(args, "--secure")
	}
	if cfg.User != "" {
		args = append(args, "--user", cfg.User, "--password", cfg.Password)
	}
	if cfg.Bulk > 0 {
		args = append(args, "--bulk", strconv.Itoa(cfg.Bulk))
	}
	if cfg.MaxItemsPerCall > 0 {
		args = append(args, "--max-items-per-call", strconv.Itoa(cfg.MaxItemsPerCall))
	}
	if cfg.MaxNodesPerRead > 0 {
		args = append(args, "--max-nodes-per-read", strconv.Itoa(cfg.MaxNodesPerRead))
	}
	if cfg.Oversize > 0 {
		args = append(args, "--oversize", strconv.Itoa(cfg.Oversize))
	}
	s := &OPCUAServer{t: t, Port: cfg.Port, args: args}
	s.Start()
	return s
}

var opcuaReadyRe = regexp.MustCompile(`ENDPOINT (opc\.tcp://\S+) CERT (\S+)`)

// Start (re)starts the server on its port with its PKI (so the same
// certificate) and waits until it prints its endpoint.
func (s *OPCUAServer) Start() {
	s.t.Helper()
	p := Start(s.t, "node", s.args...)
	s.proc = p
	WaitFor(s.t, OPCUAStartTimeout, "node-opcua server to print its endpoint", func() bool {
		out := p.Log.String()
		if strings.Contains(out, "opcua test server:") {
			s.t.Fatalf("node-opcua server failed:\n%s", out)
		}
		m := opcuaReadyRe.FindStringSubmatch(out)
		if m == nil {
			return false
		}
		s.Endpoint, s.CertFile = m[1], m[2]
		return true
	})
}

// Stop kills the server (SIGKILL, no goodbye to clients) and waits until it
// has exited.
func (s *OPCUAServer) Stop() {
	s.t.Helper()
	if s.proc == nil {
		return
	}
	pid := s.proc.Cmd.Process.Pid
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	WaitFor(s.t, 10*time.Second, "node-opcua server to exit", func() bool {
		return syscall.Kill(pid, 0) != nil
	})
	s.proc = nil
}

// Freeze stops the server process (SIGSTOP) with its connections left
// open: a server that hangs. Thaw resumes it.
func (s *OPCUAServer) Freeze() {
	if s.proc != nil {
		_ = syscall.Kill(-s.proc.Cmd.Process.Pid, syscall.SIGSTOP)
	}
}

// Thaw resumes a frozen server (SIGCONT).
func (s *OPCUAServer) Thaw() {
	if s.proc != nil {
		_ = syscall.Kill(-s.proc.Cmd.Process.Pid, syscall.SIGCONT)
	}
}

// Read reads a variable with node-opcua's own client (opcuaserver/client.mjs),
// independent of fieldgate's, and returns its value and data type name.
func (s *OPCUAServer) Read(nodeID string) (any, string) {
	s.t.Helper()
	pki := ""
	for i, a := range s.args {
		if a == "--pki" && i+1 < len(s.args) {
			pki = filepath.Join(filepath.Dir(s.args[i+1]), "client-pki")
		}
	}
	out, err := exec.Command("node", filepath.Join(opcuaServerDir(), "client.mjs"), s.Endpoint, nodeID, pki).Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		s.t.Fatalf("node-opcua client read %s: %v\n%s", nodeID, err, stderr)
	}
	var r struct {
		Value    any    `json:"value"`
		DataType string `json:"dataType"`
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &r); err != nil {
		s.t.Fatalf("node-opcua client read %s: %q: %v", nodeID, out, err)
	}
	return r.Value, r.DataType
}

// Log returns the server's output so far.
func (s *OPCUAServer) Log() string {
	if s.proc == nil {
		return ""
	}
	return s.proc.Log.String()
}
