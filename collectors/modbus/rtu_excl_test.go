package modbus

import (
	"testing"

	"golang.org/x/sys/unix"

	"fieldgate/internal/testpeer"
)

// TestRTUOpenLeavesNoTIOCEXCL: an open line is kept by its flock, not by the
// tty's exclusive flag. The flag outlives a collector killed with SIGKILL on
// a pty (the slave lives while socat holds the master), and the restarted
// collector, without CAP_SYS_ADMIN in its container, then got EBUSY on every
// open: found by the fault-injection suite (gateway/cmd/fieldgate,
// TestFaultInjection, collector SIGKILL then supervisor restart).
func TestRTUOpenLeavesNoTIOCEXCL(t *testing.T) {
	testpeer.Require(t, "socat")
	port, _ := testpeer.PtyPair(t)
	l, err := newRTULine(rtuOptions{Port: port, Baud: 19200})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := l.open(); err != nil {
		t.Fatal(err)
	}
	excl, err := unix.IoctlGetInt(int(l.lock.Fd()), unix.TIOCGEXCL)
	if err != nil {
		t.Fatalf("TIOCGEXCL: %v", err)
	}
	if excl != 0 {
		t.Errorf("TIOCEXCL is set on the open port: a SIGKILLed collector would leave the pty unopenable without CAP_SYS_ADMIN")
	}
}
