package main

// The fault-injection suite (issue 5, DESIGN.md "Reliability"): the real
// collectors run under the supervisor against real peers while the broker,
// a collector, the supervisor, the whole runtime, the serial line and the
// queue's bound fail. A subscriber records every batch; each scenario checks
// that no `seq` is missing between the first and the last seen (QoS 1 allows
// duplicates) and that collection went on during the fault.

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"fieldgate/gateway/supervisor"
	"fieldgate/internal/fieldgatetest"
	"fieldgate/internal/testpeer"
)

// Fault durations. The broker outage is the 60 s.
const (
	faultBrokerOutage    = 60 * time.Second
	faultSupervisorDown  = 5 * time.Second
	faultQueueFullOutage = 20 * time.Second
	faultPoll            = "500ms"
	faultPollInterval    = 500 * time.Millisecond
)

const (
	faultModbus = "modbus-line3"
	faultOPCUA  = "opcua-boiler"
)

// dirSize sums the sizes of the files below dir.
func dirSize(dir string) int64 {
	var n int64
	filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			n += fi.Size()
		}
		return nil
	})
	return n
}

const faultModbusRTU = `  - name: modbus-line3
    image: fieldgate/collector-modbus:real
    poll_interval: %s
    restart: always
    devices: ["%s:/dev/ttyUSB0"]
    env: {%s}
    modbus:
      transport: rtu
      serial: {port: /dev/ttyUSB0, baud: 19200}
      timeout: 300ms
      devices:
        - name: meter1
          unit_id: 1
          tags:
            - {name: speed, table: holding_register, address: 0, type: uint16}
            - {name: level, table: holding_register, address: 1, type: float32, unit: m}
`

const faultOPCUAPoll = `  - name: opcua-boiler
    image: fieldgate/collector-opcua:real
    poll_interval: %s
    restart: always
    env: {%s}
    opcua:
      endpoint: %q
      mode: poll
      security: {policy: None, mode: None}
      nodes:
        - {device: boiler1, name: temperature, node_id: "ns=1;s=Boiler1.Temperature", unit: degC}
        - {device: boiler1, name: counter, node_id: "ns=1;s=Boiler1.Counter"}
`

// TestFaultInjection runs both real collectors in containers (Modbus RTU on a
// socat pty with pymodbus behind it, OPC UA against node-opcua), both polling
// every 500 ms, and injects faults one after the other: broker outage,
// collector SIGKILL, supervisor SIGKILL, everything SIGKILLed, and a full
// queue. The first four must lose nothing; the last loses exactly where the
// queue policy dropped, and counts it.
func TestFaultInjection(t *testing.T) {
	testpeer.Require(t, "containerd", "mosquitto", "socat", "pymodbus", "node")
	e := newE2E(t)
	e.DrainNotify()
	e.AddImage("fieldgate/collector-modbus", "real", fieldgatetest.Collector(t, "modbus-collector", ""))
	e.AddImage("fieldgate/collector-opcua", "real", fieldgatetest.Collector(t, "opcua-collector", ""))
	ours, theirs := testpeer.PtyPair(t)
	testpeer.PyModbus(t, testpeer.PyModbusConfig{Mode: "rtu", Port: theirs, Baud: 19200, Units: map[int]testpeer.PyModbusUnit{
		1: {Holding: map[uint16]uint16{0: 1234, 1: 0x4148, 2: 0x0000}},
	}})
	ua := testpeer.OPCUA(t, testpeer.OPCUAConfig{})
	config := func(modbusEnv, uaEnv string) string {
		return e.Header("") + fmt.Sprintf(faultModbusRTU, faultPoll, ours, modbusEnv) + fmt.Sprintf(faultOPCUAPoll, faultPoll, uaEnv, ua.Endpoint)
	}
	e.WriteRaw(config("LOG_LEVEL: info", "LOG_LEVEL: info"))
	rec := fieldgatetest.NewRecorder(t, e.Broker, "", "")
	names := []string{faultModbus, faultOPCUA}
	e.Start()
	start := time.Now()
	for _, n := range names {
		e.WaitCollector(n, n+" running", 60*time.Second, func(supervisor.CollectorStatus) bool { return true })
	}
	from := map[string]uint64{} // whole history: every seq seen must be there
	rec.WaitRecovered(t, names, from, start, 90*time.Second)
	top := t

	ok := t.Run("1 broker stopped for 60s", func(t *testing.T) {
		defer e.Use(t)()
		t0 := time.Now()
		e.Brk.Stop()
		time.Sleep(faultBrokerOutage) // the fault lasts this long
		for _, n := range names {
			if c := e.Collector(n); c.State != supervisor.StateRunning || c.Restarts != 0 {
				t.Errorf("%s during the outage: state %s, restarts %d", n, c.State, c.Restarts)
			}
		}
		e.Brk.Start()
		t1 := time.Now()
		drain := rec.WaitRecovered(t, names, from, t1, 3*time.Minute)
		t.Logf("FIGURE backlog drain time after a %v broker outage (broker restart until every seq arrived): %v", faultBrokerOutage, drain.Round(10*time.Millisecond))
		for _, n := range names {
			all := rec.All(n)
			if got, want := rec.Polled(n, t0.Add(time.Second), t1.Add(-time.Second)), int((faultBrokerOutage-2*time.Second)/faultPollInterval)*8/10; got < want {
				t.Errorf("%s: %d batches polled during the outage, want at least %d", n, got, want)
			}
			var late, notMarked int
			var worstLive, worstAfterRestart time.Duration
			reconnect := time.Time{}
			for _, s := range all {
				if !s.Recv.Before(t1) && (reconnect.IsZero() || s.Recv.Before(reconnect)) {
					reconnect = s.Recv
				}
			}
			for _, s := range all {
				if s.TS.After(t0.Add(time.Second)) && s.TS.Before(t1.Add(-time.Second)) {
					late++
					if !s.Replayed {
						notMarked++
					}
				}
				if s.TS.After(t1) && s.Recv.Before(t1.Add(drain)) && !s.Replayed {
					worstLive = max(worstLive, s.Recv.Sub(s.TS))
				}
				if s.TS.After(t1) && s.Recv.Before(t1.Add(drain)) {
					worstAfterRestart = max(worstAfterRestart, s.Recv.Sub(s.TS))
				}
			}
			if late == 0 || notMarked > 0 {
				t.Errorf("%s: %d of %d batches polled during the outage lack \"replayed\": true", n, notMarked, late)
			}
			t.Logf("FIGURE %s: %d batches polled during the outage, all replayed; first message %v after the broker restart; worst latency of live (non-replayed) batches polled after the restart, during the drain %v; of any batch polled after the restart (including those that waited for the collector's reconnect), during the drain %v",
				n, late, reconnect.Sub(t1).Round(10*time.Millisecond), worstLive.Round(time.Millisecond), worstAfterRestart.Round(time.Millisecond))
		}
	})

	ok = t.Run("2 collector task SIGKILLed", func(t *testing.T) {
		defer e.Use(t)()
		old := e.Collector(faultModbus)
		other := e.Collector(faultOPCUA)
		t0 := time.Now()
		if err := syscall.Kill(int(old.Pid), syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		nc := e.WaitCollector(faultModbus, "modbus collector restarted", 60*time.Second, func(c supervisor.CollectorStatus) bool {
			return c.Pid != old.Pid && c.Restarts == old.Restarts+1
		})
		t1 := time.Now()
		if nc.LastExit == nil || nc.LastExit.Code != 137 {
			t.Errorf("last_exit = %+v, want code 137", nc.LastExit)
		}
		took := rec.WaitRecovered(t, names, from, t1, 60*time.Second)
		rec.WaitGood(t, faultModbus, t1, 20*time.Second) // the line opens again
		if n := rec.Polled(faultOPCUA, t0, t1); n == 0 {
			t.Errorf("%s polled nothing while %s restarted", faultOPCUA, faultModbus)
		}
		if c := e.Collector(faultOPCUA); c.Pid != other.Pid || c.Restarts != other.Restarts {
			t.Errorf("%s touched: pid %d -> %d, restarts %d -> %d", faultOPCUA, other.Pid, c.Pid, other.Restarts, c.Restarts)
		}
		t.Logf("FIGURE collector SIGKILL: restarted in %v (restarts %d), no seq lost, caught up %v later", t1.Sub(t0).Round(10*time.Millisecond), nc.Restarts, took.Round(10*time.Millisecond))
	}) && ok

	ok = t.Run("3 supervisor SIGKILLed and restarted", func(t *testing.T) {
		defer e.Use(t)()
		before := map[string]supervisor.CollectorStatus{}
		for _, n := range names {
			before[n] = e.Collector(n)
		}
		e.Kill(syscall.SIGKILL)
		t0 := time.Now()
		time.Sleep(faultSupervisorDown) // the fault lasts this long
		e.Start()
		t1 := time.Now()
		for _, n := range names {
			c := e.WaitCollector(n, n+" adopted", 60*time.Second, func(c supervisor.CollectorStatus) bool { return c.Adopted })
			// Restarts are counted since the supervisor started: not compared.
			if c.Pid != before[n].Pid {
				t.Errorf("%s: pid %d -> %d; want it adopted untouched", n, before[n].Pid, c.Pid)
			}
		}
		rec.WaitRecovered(t, names, from, t1, 60*time.Second)
		for _, n := range names {
			rec.WaitGood(t, n, t1, 20*time.Second)
			if got := rec.Polled(n, t0, t1); got < int(faultSupervisorDown/faultPollInterval)/2 {
				t.Errorf("%s: %d batches polled while the supervisor was down: %s", n, got, rec.Describe(n, t0.Add(-10*time.Second), t1))
			}
		}
	}) && ok

	ok = t.Run("4 everything SIGKILLed at once", func(t *testing.T) {
		defer e.Use(t)()
		before := map[string]supervisor.CollectorStatus{}
		last := map[string]uint64{}
		for _, n := range names {
			before[n] = e.Collector(n)
		}
		e.Kill(syscall.SIGKILL)
		tasks := e.Ctrd.KillAll(t)
		t0 := time.Now()
		for _, n := range names {
			last[n] = rec.MaxSeq(n)
			if fieldgatetest.TaskRunning(before[n].Pid) {
				t.Fatalf("%s (pid %d) survived; killed tasks %v", n, before[n].Pid, tasks)
			}
		}
		e.Ctrd.Restart(t, top)
		e.Start()
		for _, n := range names {
			c := e.WaitCollector(n, n+" running again", 90*time.Second, func(c supervisor.CollectorStatus) bool { return c.Pid != before[n].Pid })
			t.Logf("%s after the restart: pid %d -> %d, restarts %d -> %d, adopted %v, last_exit %+v", n, before[n].Pid, c.Pid, before[n].Restarts, c.Restarts, c.Adopted, c.LastExit)
		}
		t1 := time.Now()
		took := rec.WaitRecovered(t, names, from, t1, 90*time.Second)
		for _, n := range names {
			rec.WaitGood(t, n, t1, 20*time.Second)
			t.Logf("FIGURE everything killed: %s highest seq received before the kill %d; no seq missing up to %d (page cache intact, QUEUE_SYNC default 1s); back %v after the kill, caught up %v later",
				n, last[n], rec.MaxSeq(n), t1.Sub(t0).Round(10*time.Millisecond), took.Round(10*time.Millisecond))
		}
	}) && ok

	if !ok {
		// Scenario 7 changes the collectors' queue; without a clean base the
		// gap it expects would be indistinguishable from a loss.
		t.Fatal("an earlier scenario failed; queue-full scenario not run")
	}

	t.Run("7 queue full: drop_oldest and reject_new count what they drop", func(t *testing.T) {
		defer e.Use(t)()
		old := map[string]supervisor.CollectorStatus{}
		for _, n := range names {
			old[n] = e.Collector(n)
		}
		e.WriteRaw(config("LOG_LEVEL: info, QUEUE_MAX_BYTES: 4KiB", "LOG_LEVEL: info, QUEUE_MAX_BYTES: 4KiB, QUEUE_POLICY: reject_new"))
		for _, n := range names {
			e.WaitCollector(n, n+" recreated with a 4 KiB queue", 60*time.Second, func(c supervisor.CollectorStatus) bool {
				return c.Pid != old[n].Pid && c.SpecHash != old[n].SpecHash
			})
		}
		base := time.Now()
		rec.WaitRecovered(t, names, from, base, 60*time.Second)
		mark := map[string]uint64{}
		for _, n := range names {
			mark[n] = rec.MaxSeq(n)
		}
		t0 := time.Now()
		e.Brk.Stop()
		time.Sleep(faultQueueFullOutage) // the fault lasts this long
		e.Brk.Start()
		t1 := time.Now()
		var st map[string]fieldgatetest.CollectorStatus
		testpeer.WaitFor(t, 90*time.Second, "both collectors back with drops counted in their status", func() bool {
			st = map[string]fieldgatetest.CollectorStatus{faultModbus: rec.Latest(faultModbus), faultOPCUA: rec.Latest(faultOPCUA)}
			m, o := st[faultModbus], st[faultOPCUA]
			if m.Queue == nil || o.Queue == nil || m.Queue.Dropped == 0 || o.Queue.Rejected == 0 {
				return false
			}
			for _, n := range names {
				// The retained status must catch up with the final counts
				// (status.json, via /status), once the backlog is sent.
				var report fieldgatetest.CollectorReport
				json.Unmarshal(e.Collector(n).Report, &report)
				if report.Queue == nil || report.Queue.Pending != 0 || report.Queue.Dropped != st[n].Queue.Dropped || report.Queue.Rejected != st[n].Queue.Rejected {
					return false
				}
				live := false
				for _, s := range rec.All(n) {
					live = live || s.TS.After(t1.Add(time.Second))
				}
				if !live {
					return false
				}
			}
			return true
		})
		for _, n := range names {
			miss := rec.Missing(n, mark[n])
			q := st[n].Queue
			counted := q.Dropped + q.Rejected
			contiguous := len(miss) > 0 && miss[len(miss)-1]-miss[0]+1 == uint64(len(miss))
			if !contiguous || uint64(len(miss)) > counted {
				t.Errorf("%s: missing seqs %s, queue status dropped %d rejected %d: want one run of at most the counted drops", n, fieldgatetest.Ranges(miss), q.Dropped, q.Rejected)
			}
			// The missing batches were polled while the collector could not
			// deliver: from the broker's stop until the collector reconnected
			// (paho's reconnect back-off may keep it away up to 30 s longer),
			// so their neighbours were polled then.
			var before, after, reconnect time.Time
			for _, s := range rec.All(n) {
				if !s.Recv.Before(t1) && (reconnect.IsZero() || s.Recv.Before(reconnect)) {
					reconnect = s.Recv
				}
				if len(miss) > 0 && s.Seq == miss[0]-1 {
					before = s.TS
				}
				if len(miss) > 0 && s.Seq == miss[len(miss)-1]+1 {
					after = s.TS
				}
			}
			if before.Before(t0.Add(-2*time.Second)) || after.After(reconnect.Add(2*time.Second)) {
				t.Errorf("%s: gap %s lies outside the outage: neighbours polled at %v and %v, broker stopped %v, collector back %v", n, fieldgatetest.Ranges(miss), before, after, t0, reconnect)
			}
			var report fieldgatetest.CollectorReport
			json.Unmarshal(e.Collector(n).Report, &report)
			if report.Queue == nil || report.Queue.Dropped != q.Dropped || report.Queue.Rejected != q.Rejected {
				t.Errorf("%s: collector_status in /status %s, want the counts of the MQTT status %+v", n, e.Collector(n).Report, *q)
			}
			t.Logf("FIGURE queue full (4 KiB, %v outage, collector back %v after the broker): %s lost seqs %s (%d), status queue %+v", faultQueueFullOutage, reconnect.Sub(t1).Round(10*time.Millisecond), n, fieldgatetest.Ranges(miss), len(miss), *q)
		}
	})
}

// TestFaultSerialUnplug pulls the RS-485 line out and plugs it back at the
// same path: the device turns bad with the reason in every batch and in the
// collector status, then recovers in the same process.
//
// The collector runs on the host here, not in a container, because a pty
// cannot be plugged back into a running container: the runtime bind-mounts
// the host's /dev/pts/N (a devpts node cannot be recreated with mknod), and
// the bind mount pins the old devpts dentry. After socat restarts, the new
// pty is a new dentry even when it gets the same N and inode number, and
// opening the container's stale node fails with EIO until the container is
// recreated. A real USB adapter does not have this problem: the runtime
// creates /dev/ttyUSB0 in the container as a device node (mknod with the
// host's major/minor), and the kernel gives the re-plugged adapter the same
// major/minor, so the same node opens the new device.
func TestFaultSerialUnplug(t *testing.T) {
	testpeer.Require(t, "mosquitto", "socat", "pymodbus")
	bin := fieldgatetest.Collector(t, "modbus-collector", "")
	broker := testpeer.Mosquitto(t)
	lineDir := t.TempDir()
	socat, port, slavePort := testpeer.PtyLinks(t, lineDir)
	slave := testpeer.PyModbus(t, testpeer.PyModbusConfig{Mode: "rtu", Port: slavePort, Baud: 19200, Units: map[int]testpeer.PyModbusUnit{
		1: {Holding: map[uint16]uint16{0: 1234, 1: 0x4148, 2: 0x0000}},
	}})
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "collector.yaml")
	if err := os.WriteFile(cfgFile, []byte(fmt.Sprintf(`transport: rtu
serial: {port: %q, baud: 19200}
timeout: 300ms
devices:
  - name: meter1
    unit_id: 1
    tags:
      - {name: speed, table: holding_register, address: 0, type: uint16}
      - {name: level, table: holding_register, address: 1, type: float32, unit: m}
`, port)), 0o644); err != nil {
		t.Fatal(err)
	}
	rec := fieldgatetest.NewRecorder(t, broker, "", "")
	const name = "modbus-host"
	names := []string{name}
	cmd := exec.Command(bin)
	cmd.Env = []string{"POLL_INTERVAL=" + faultPoll, "MQTT_BROKER=" + broker, "GATEWAY_ID=e2e-gw", "COLLECTOR_NAME=" + name,
		"COLLECTOR_CONFIG=" + cfgFile, "DATA_DIR=" + filepath.Join(dir, "data"), "LOG_LEVEL=info"}
	logs := &testpeer.SyncBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("collector log:\n%s", logs)
		}
	})
	start := time.Now()
	from := map[string]uint64{}
	rec.WaitRecovered(t, names, from, start, 60*time.Second)

	// Unplug: the line and its path vanish, the slave with them.
	t0 := time.Now()
	syscall.Kill(-socat.Cmd.Process.Pid, syscall.SIGKILL)
	os.Remove(port)
	os.Remove(slavePort)
	slave.Stop()
	var reason string
	testpeer.WaitFor(t, 30*time.Second, "meter1 bad in batches and status", func() bool {
		bad := 0
		for _, s := range rec.All(name) {
			if s.TS.After(t0.Add(time.Second)) && len(s.Bad) == 2 {
				bad++
				reason = strings.Join(s.Bad, "; ")
			}
		}
		return bad >= 3 && strings.HasPrefix(rec.Latest(name).Devices["meter1"], "error: ")
	})
	t.Logf("unplugged: batches say %q, status says %q", reason, rec.Latest(name).Devices["meter1"])
	if !strings.Contains(reason, port) && !strings.Contains(reason, "timeout") {
		t.Errorf("bad readings' error %q names neither the port %s nor a timeout", reason, port)
	}

	// Plug back at the same path.
	testpeer.PtyLinks(t, lineDir)
	slave.Restart()
	t1 := time.Now()
	rec.WaitRecovered(t, names, from, t1, 60*time.Second)
	testpeer.WaitFor(t, 30*time.Second, "meter1 good again", func() bool {
		for _, s := range rec.All(name) {
			if s.TS.After(t1) && len(s.Bad) == 0 {
				return rec.Latest(name).Devices["meter1"] == "ok"
			}
		}
		return false
	})
	select {
	case <-exited:
		t.Fatalf("collector exited: %v", cmd.ProcessState)
	default:
	}
	if n := rec.Polled(name, t0, t1); n == 0 {
		t.Errorf("nothing polled while the line was unplugged")
	}
	if miss := rec.Missing(name, 0); len(miss) > 0 {
		t.Errorf("missing seqs %s", fieldgatetest.Ranges(miss))
	}
}

// TestFaultBrokerRefusesCredentials runs a collector whose MQTT password the
// broker refuses: the collector keeps polling into its queue, says why in
// its log, backs off and is not restarted; once the broker accepts it,
// everything queued arrives from seq 1 on.
func TestFaultBrokerRefusesCredentials(t *testing.T) {
	testpeer.Require(t, "containerd", "mosquitto", "pymodbus")
	e := newE2E(t, testpeer.WithPassword(map[string]string{"gw": "right", "sub": "subpw"}))
	e.DrainNotify()
	e.AddImage("fieldgate/collector-modbus", "real", fieldgatetest.Collector(t, "modbus-collector", ""))
	slave := testpeer.PyModbus(t, testpeer.PyModbusConfig{Mode: "tcp", Units: map[int]testpeer.PyModbusUnit{
		1: {Holding: map[uint16]uint16{0: 1234}},
	}})
	pw := filepath.Join(e.Dir, "mqtt.pass")
	if err := os.WriteFile(pw, []byte("wrong\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	const name = "modbus-cell"
	e.WriteRaw(e.Header(fmt.Sprintf(", username: gw, password_file: %q", pw)) + fmt.Sprintf(`  - name: %s
    image: fieldgate/collector-modbus:real
    poll_interval: %s
    restart: always
    modbus:
      transport: tcp
      tcp: {address: %q}
      devices:
        - name: plc
          unit_id: 1
          tags:
            - {name: speed, table: holding_register, address: 0, type: uint16}
`, name, faultPoll, slave.Addr))
	rec := fieldgatetest.NewRecorder(t, e.Broker, "sub", "subpw")
	e.Start()
	started := e.WaitCollector(name, "collector running", 60*time.Second, func(supervisor.CollectorStatus) bool { return true })
	logFile := filepath.Join(e.Dir, "logs", name, "collector.log")
	queueDir := filepath.Join(e.Dir, "collectors", name, "queue")
	failures := func() []string {
		b, _ := os.ReadFile(logFile)
		var out []string
		for _, l := range strings.Split(string(b), "\n") {
			if strings.Contains(l, "mqtt connect failed") {
				out = append(out, l)
			}
		}
		return out
	}
	testpeer.WaitFor(t, 60*time.Second, `"mqtt connect failed" … "not Authorized" in the collector log`, func() bool {
		f := failures()
		return len(f) > 0 && strings.Contains(f[0], "not Authorized")
	})
	size := dirSize(queueDir)
	t0 := time.Now()
	testpeer.WaitFor(t, 30*time.Second, "the queue to grow", func() bool { return dirSize(queueDir) > size+1000 })
	// Let the refusal last long enough to see the back-off.
	time.Sleep(time.Until(t0.Add(15 * time.Second)))
	f := failures()
	t.Logf("after %v: %d connect failures, last: %s", time.Since(t0).Round(time.Second), len(f), f[len(f)-1])
	if len(f) > 6 {
		t.Errorf("%d connect attempts in about 20 s: no back-off", len(f))
	}
	if c := e.Collector(name); c.Pid != started.Pid || c.Restarts != 0 || c.State != supervisor.StateRunning {
		t.Errorf("collector state %s, restarts %d, pid %d -> %d: want it running untouched", c.State, c.Restarts, started.Pid, c.Pid)
	}
	// The supervisor's /status shows the collector's own status.json.
	var report fieldgatetest.CollectorReport
	testpeer.WaitFor(t, 10*time.Second, "collector_status with the refusal and a queue", func() bool {
		report = fieldgatetest.CollectorReport{}
		json.Unmarshal(e.Collector(name).Report, &report)
		return report.Queue != nil && report.Queue.Pending > 10
	})
	if report.MQTT.Connected || !strings.Contains(report.MQTT.LastError, "not Authorized") {
		t.Errorf("collector_status mqtt = %+v, want not connected with the refusal", report.MQTT)
	}
	t.Logf("collector_status while refused: mqtt %+v, queue %+v", report.MQTT, *report.Queue)

	// The broker now accepts the collector's password.
	passwd := filepath.Join(filepath.Dir(e.Brk.ConfigPath), "passwd")
	if err := os.WriteFile(passwd, []byte("gw:wrong\nsub:subpw\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mosquitto_passwd", "-U", passwd).CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_passwd: %v: %s", err, out)
	}
	e.Brk.Stop()
	e.Brk.Start()
	t1 := time.Now()
	queued := dirSize(queueDir)
	took := rec.WaitRecovered(t, []string{name}, map[string]uint64{}, t1, 90*time.Second)
	if first := rec.Missing(name, 0); len(first) > 0 {
		t.Errorf("missing seqs %s", fieldgatetest.Ranges(first))
	}
	lo := uint64(0)
	for _, s := range rec.All(name) {
		if lo == 0 || s.Seq < lo {
			lo = s.Seq
		}
	}
	if lo != 1 {
		t.Errorf("lowest seq received %d, want 1: the batches queued while refused are lost", lo)
	}
	if c := e.Collector(name); c.Pid != started.Pid || c.Restarts != 0 {
		t.Errorf("collector restarted: pid %d -> %d, restarts %d", started.Pid, c.Pid, c.Restarts)
	}
	t.Logf("FIGURE refused credentials: %d batches (queue %d bytes) delivered from seq 1 within %v of the broker accepting", rec.MaxSeq(name), queued, took.Round(10*time.Millisecond))
}
