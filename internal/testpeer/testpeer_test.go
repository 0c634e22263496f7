package testpeer

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

func TestMosquittoRoundTrip(t *testing.T) {
	addr := Mosquitto(t)
	msgs := Subscribe(t, addr, "t/#")
	c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID("pub"))
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	defer c.Disconnect(100)
	if tok := c.Publish("t/x", 1, false, "hello"); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("publish: %v", tok.Error())
	}
	select {
	case m := <-msgs:
		if m.Topic != "t/x" || string(m.Payload) != "hello" {
			t.Errorf("got %+v", m)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no message")
	}
}

func TestPtyPairCarriesBytes(t *testing.T) {
	a, b := PtyPair(t)
	for _, p := range []string{a, b} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if gid := st.Sys().(*syscall.Stat_t).Gid; st.Mode().Perm() != 0o660 || fmt.Sprint(gid) != SerialGroup() {
			t.Errorf("%s: mode %v group %d, want 0660 and group %s (a non-root collector reaches it through its group)", p, st.Mode().Perm(), gid, SerialGroup())
		}
	}
	fa, err := os.OpenFile(a, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer fa.Close()
	fb, err := os.OpenFile(b, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer fb.Close()
	if _, err := fa.Write([]byte{0x01, 0x03, 0xff}); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 3)
	n := 0
	for n < 3 {
		m, err := fb.Read(buf[n:])
		if err != nil {
			t.Fatal(err)
		}
		n += m
	}
	if buf[0] != 0x01 || buf[2] != 0xff {
		t.Errorf("got % x", buf)
	}
}

func TestFreeAddressPool(t *testing.T) {
	routes, err := hostRoutes()
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ {
		pool, err := freeAddressPool()
		if err != nil {
			t.Fatal(err)
		}
		_, n, err := net.ParseCIDR(pool)
		if err != nil || n.String() != pool || !strings.HasPrefix(pool, "172.") || !strings.HasSuffix(pool, "/20") {
			t.Fatalf("pool %q: %v", pool, err)
		}
		for _, r := range routes {
			if r.Contains(n.IP) || n.Contains(r.IP) {
				t.Errorf("pool %s overlaps the host route %s", pool, r)
			}
		}
	}
}

// errorsTB records Errorf calls instead of failing.
type errorsTB struct {
	testing.TB
	errs []string
}

func (r *errorsTB) Errorf(format string, args ...any) {
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

// TestContainerdCleanupFindsLeftovers plants what a leaked shim leaves — a
// shim process of the peer's socket, a mount under its dir, runc state and
// a container cgroup of its namespace — and checks that the cleanup's
// verification reports each, removes it, and is clean the second time.
func TestContainerdCleanupFindsLeftovers(t *testing.T) {
	p := Containerd(t)
	shim := exec.Command("/usr/bin/python3", "-c", "import time; time.sleep(600)", "-namespace", p.Namespace, "-id", "c", "-address", p.Address)
	shim.Args[0] = "containerd-shim-runc-v2"
	if err := shim.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { shim.Wait(); close(exited) }()
	mnt := filepath.Join(p.Dir, "state", "leak", "rootfs")
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", mnt, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(runcRoot, p.Namespace, "c"), 0o700); err != nil {
		t.Fatal(err)
	}
	cg := filepath.Join(cgroupBases()[0], p.Namespace, "c")
	if err := os.MkdirAll(cg, 0o755); err != nil {
		t.Fatal(err)
	}

	rec := &errorsTB{TB: t}
	p.verifyClean(rec)
	all := strings.Join(rec.errs, "\n")
	for _, want := range []string{"containerd-shim processes", "mounts left: " + mnt, "runc state left", "container cgroups left: " + p.Namespace + "/c"} {
		if !strings.Contains(all, want) {
			t.Errorf("leftover not reported: %q in\n%s", want, all)
		}
	}
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		t.Error("leaked shim not killed")
	}
	if _, err := os.Stat(cg); !os.IsNotExist(err) {
		t.Errorf("cgroup %s: %v", cg, err)
	}
	again := &errorsTB{TB: t}
	p.verifyClean(again)
	if len(again.errs) > 0 {
		t.Errorf("second check: %q", again.errs)
	}
}
