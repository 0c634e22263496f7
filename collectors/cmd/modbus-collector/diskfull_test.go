package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"fieldgate/internal/testpeer"
)

// TestBinaryDiskFull (issue 8, "a full disk"): the built collector with its
// DATA_DIR on a 256 KiB tmpfs that something else fills while the broker is
// away. It keeps polling into memory and says "degraded" with the reason in
// status.json (written in place: no new file fits), counting append_failed;
// once the broker is back and space returns it sends everything — no seq
// missing — and is online again without a restart; killed and started
// again, it goes on without a gap.
func TestBinaryDiskFull(t *testing.T) {
	testpeer.Require(t, "mosquitto", "pymodbus", "root")
	bin := buildBinary(t)
	b := testpeer.StartBroker(t)
	broker := b.Addr
	slave := testpeer.PyModbus(t, testpeer.PyModbusConfig{Mode: "tcp", Units: map[int]testpeer.PyModbusUnit{
		1: {Holding: map[uint16]uint16{0: 2301}},
	}})
	disk := testpeer.Tmpfs(t, "256k")
	cfgPath := filepath.Join(t.TempDir(), "collector.yaml")
	os.WriteFile(cfgPath, []byte(fmt.Sprintf("transport: tcp\ntcp: {address: %q}\ndevices:\n  - name: meter1\n    unit_id: 1\n    tags:\n      - {name: voltage, table: holding_register, address: 0, type: uint16}\n", slave.Addr)), 0o644)
	data := testpeer.Subscribe(t, broker, "fieldgate/+/data/modbus/meter1")
	status := testpeer.Subscribe(t, broker, "fieldgate/+/status/modbus")
	start := func() *testpeer.Process {
		cmd := exec.Command(bin)
		cmd.Env = []string{"POLL_INTERVAL=20ms", "MQTT_BROKER=" + broker, "COLLECTOR_CONFIG=" + cfgPath, "DATA_DIR=" + filepath.Join(disk, "data")}
		return testpeer.StartCmd(t, "modbus-collector", cmd)
	}
	seen := map[uint64]bool{}
	var last uint64
	receive := func(n int) {
		t.Helper()
		deadline := time.After(30 * time.Second)
		for got := 0; got < n; got++ {
			select {
			case m := <-data:
				var p payload
				if err := json.Unmarshal(m.Payload, &p); err != nil {
					t.Fatal(err)
				}
				seen[p.Seq] = true
				last = max(last, p.Seq)
			case <-deadline:
				t.Fatalf("only %d of %d batches in 30 s", got, n)
			}
		}
	}
	cmd := start()
	receive(5)

	// While the broker is away batches stay queued, so the full disk
	// refuses them (with the broker there, the queue reuses the space of
	// what it already sent).
	b.Stop()
	for len(status) > 0 {
		<-status // an "online" from before must not count below
	}
	filler, err := os.Create(filepath.Join(disk, "filler"))
	if err != nil {
		t.Fatal(err)
	}
	for chunk := make([]byte, 4096); ; {
		if _, err := filler.Write(chunk); err != nil {
			break
		}
	}
	filler.Close()
	testpeer.WaitFor(t, 20*time.Second, "status.json saying degraded", func() bool {
		raw, err := os.ReadFile(filepath.Join(disk, "data", "status.json"))
		var st map[string]any
		if err != nil || json.Unmarshal(raw, &st) != nil {
			return false
		}
		q, _ := st["queue"].(map[string]any)
		reason, _ := st["degraded"].(string)
		return st["state"] == "degraded" && strings.Contains(reason, "no space left on device") && q["append_failed"].(float64) > 0
	})
	os.Remove(filepath.Join(disk, "filler"))
	b.Start()
	waitStatus(t, status, func(st map[string]any) bool { return st["state"] == "online" })
	receive(20)

	cmd.Kill()
	before := last
	start()
	receive(20)
	// What was queued at the kill arrives after the live batches.
	missing := func() []uint64 {
		var m []uint64
		for s := uint64(1); s <= max(last, before+20); s++ {
			if !seen[s] {
				m = append(m, s)
			}
		}
		return m
	}
	deadline := time.Now().Add(30 * time.Second)
	for len(missing()) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("seqs missing: %v (before the kill up to %d, now %d)", missing(), before, last)
		}
		receive(1)
	}
}
