package testpeer

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func init() {
	// Debian's docker.io (dockerd 20.10) and docker-compose (1.29).
	requirements["docker"] = []string{"dockerd", "docker-compose"}
}

// Docker is a private Docker engine started for one test: its own data root,
// exec root, API socket, pid file and containerd namespace, no iptables rules
// and no default bridge, so it shares nothing with the host's Docker or with
// other tests, and leaves nothing behind when the test ends.
type Docker struct {
	// Host is the engine's address for DOCKER_HOST, "unix:///…/docker.sock".
	Host string
	// Client is the docker command line (the one next to dockerd when
	// there is one: the engine's own version).
	Client string
	// Compose is docker-compose.
	Compose string
	// Dir holds everything the engine writes.
	Dir string
	t   testing.TB
	log string
}

// Dockerd starts a private dockerd and waits until it answers. When the test
// ends it stops the engine (and the containerd it supervises), unmounts
// whatever the engine left mounted under Dir and checks that no process of
// it remains. Needs root and the "docker" peer (see Require).
func Dockerd(t testing.TB) *Docker {
	t.Helper()
	Require(t, "root", "docker")
	dockerd, _ := exec.LookPath("dockerd")
	compose, _ := exec.LookPath("docker-compose")
	client := filepath.Join(filepath.Dir(filepath.Dir(dockerd)), "bin", "docker") // /usr/sbin/dockerd -> /usr/bin/docker
	if _, err := os.Stat(client); err != nil {
		if client, err = exec.LookPath("docker"); err != nil {
			t.Fatalf("docker client: %v", err)
		}
	}
	// A short directory: the engine's unix sockets live under it (108-byte limit).
	dir, err := os.MkdirTemp("", "fgdk-")
	if err != nil {
		t.Fatal(err)
	}
	var id [4]byte
	_, _ = rand.Read(id[:])
	ns := "fgtest-" + hex.EncodeToString(id[:])
	d := &Docker{Host: "unix://" + filepath.Join(dir, "docker.sock"), Client: client, Compose: compose, Dir: dir, t: t,
		log: filepath.Join(dir, "dockerd.log")}
	logf, err := os.Create(d.log)
	if err != nil {
		t.Fatal(err)
	}
	pool, err := freeAddressPool()
	if err != nil {
		os.RemoveAll(dir)
		t.Fatal(err)
	}
	cmd := exec.Command(dockerd,
		// Networks from a /20 of its own: two engines on one host (tests
		// run in parallel) must not route to each other's containers.
		"--default-address-pool", "base="+pool+",size=24",
		"--data-root", filepath.Join(dir, "data"),
		"--exec-root", filepath.Join(dir, "exec"),
		"-H", d.Host,
		"--pidfile", filepath.Join(dir, "docker.pid"),
		"--containerd-namespace", ns,
		"--containerd-plugins-namespace", ns+"-plugins",
		"--iptables=false", "--ip6tables=false", "--bridge=none",
		"--log-level", "warn",
	)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		os.RemoveAll(dir)
		t.Fatalf("start dockerd: %v", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); logf.Close(); close(done) }()
	t.Cleanup(func() { d.stop(cmd, done) })

	deadline := time.Now().Add(60 * time.Second)
	for {
		if _, err := d.Run("version", "--format", "{{.Server.Version}}"); err == nil {
			return d
		}
		select {
		case <-done:
			t.Fatalf("dockerd exited at start:\n%s", d.tail())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("dockerd did not answer within 60 s:\n%s", d.tail())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Env is the environment for docker and docker-compose commands: the
// caller's, with DOCKER_HOST pointing at this engine.
func (d *Docker) Env(extra ...string) []string {
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "DOCKER_HOST=") })
	return append(append(env, "DOCKER_HOST="+d.Host), extra...)
}

// Run runs the docker client against this engine and returns its combined
// output; an error carries the output.
func (d *Docker) Run(args ...string) (string, error) {
	cmd := exec.Command(d.Client, args...)
	cmd.Env = d.Env()
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("docker %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

func (d *Docker) tail() string {
	b, _ := os.ReadFile(d.log)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(lines[max(0, len(lines)-40):], "\n")
}

// stop ends the engine: SIGTERM (it stops its containers and its
// containerd), SIGKILL to the whole process group after 60 s; then any
// process still running from Dir (a shim) is killed, every mount under Dir
// is detached, and Dir is removed. What it had to clean up by force is an
// error: a clean stop leaves nothing.
func (d *Docker) stop(cmd *exec.Cmd, done chan struct{}) {
	t := d.t
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Errorf("dockerd did not stop within 60 s of SIGTERM; killing it")
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
	if t.Failed() {
		t.Logf("dockerd log (last lines):\n%s", d.tail())
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		pids := processesUnder(d.Dir)
		if len(pids) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("processes of the engine still running after it stopped: %v; killing them", pids)
			for _, pid := range pids {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	mounts := MountsUnder(d.Dir)
	for i := len(mounts) - 1; i >= 0; i-- { // mounts on top of others come later: undo them first
		if err := unix.Unmount(mounts[i], unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
			t.Errorf("unmount %s: %v", mounts[i], err)
		}
	}
	if err := os.RemoveAll(d.Dir); err != nil {
		t.Errorf("remove the engine's directory: %v", err)
	}
}

// MountsUnder lists the mount points at or below dir, in /proc/self/mountinfo
// order (parents before the mounts on top of them).
func MountsUnder(dir string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMount(fields[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	return out
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// processesUnder lists the pids whose command line mentions dir.
func processesUnder(dir string) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && strings.Contains(string(b), dir) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// freeAddressPool picks a random /20 in 172.16.0.0/12 that no route of the
// host overlaps.
func freeAddressPool() (string, error) {
	routes, err := hostRoutes()
	if err != nil {
		return "", err
	}
	for range 64 {
		var b [2]byte
		_, _ = rand.Read(b[:])
		ip := net.IPv4(172, 16+b[0]%16, b[1]&0xF0, 0)
		pool := &net.IPNet{IP: ip.To4(), Mask: net.CIDRMask(20, 32)}
		if !slices.ContainsFunc(routes, func(r *net.IPNet) bool { return r.Contains(pool.IP) || pool.Contains(r.IP) }) {
			return pool.String(), nil
		}
	}
	return "", errors.New("no free /20 in 172.16.0.0/12 for the test engine's networks")
}

// hostRoutes reads the IPv4 routes of /proc/net/route (default route left out).
func hostRoutes() ([]*net.IPNet, error) {
	b, err := os.ReadFile("/proc/net/route")
	if err != nil {
		return nil, err
	}
	var out []*net.IPNet
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 8 {
			continue
		}
		dst, err1 := strconv.ParseUint(f[1], 16, 32)
		mask, err2 := strconv.ParseUint(f[7], 16, 32)
		if err1 != nil || err2 != nil || mask == 0 {
			continue
		}
		// /proc/net/route prints addresses in host (little-endian) byte order.
		le := func(v uint64) net.IP { return net.IPv4(byte(v), byte(v>>8), byte(v>>16), byte(v>>24)).To4() }
		out = append(out, &net.IPNet{IP: le(dst), Mask: net.IPMask(le(mask))})
	}
	return out, nil
}
