package bench

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"fieldgate/firmware/ociimage"
	"fieldgate/internal/testpeer"
)

// buildStatic builds a command for a scratch container image (no cgo).
func buildStatic(b *testing.B, dir, pkg string) string {
	b.Helper()
	out := filepath.Join(dir, filepath.Base(pkg))
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if msg, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("go build %s: %v\n%s", pkg, err, msg)
	}
	return out
}

// gatewayStatus is what the benchmark reads of the supervisor's /status.
type gatewayStatus struct {
	Collectors []struct {
		Name  string `json:"name"`
		State string `json:"state"`
		Pid   int    `json:"pid"`
	} `json:"collectors"`
}

// BenchmarkGateway runs the whole gateway as deployed: the supervisor with
// a private containerd, the Modbus collector in its container on the
// reference load (50 PLCs × 100 registers at 100 ms) and the OPC UA
// collector in its container on the same shape (50 devices × 100 items,
// 5,000 monitored items at 1 s, every value changing), both publishing to
// mosquitto; it reports the three processes' RSS summed (the highest
// sample of a window, and their peaks since start).
func BenchmarkGateway(b *testing.B) {
	testpeer.Require(b, "containerd", "mosquitto")
	for range b.N {
		benchGateway(b)
	}
}

func benchGateway(b *testing.B) {
	const plcs, items, perDevice = 50, 5000, 100
	dir := b.TempDir()
	bins := filepath.Join(dir, "bin")
	if err := os.MkdirAll(bins, 0o755); err != nil {
		b.Fatal(err)
	}
	fieldgate := buildStatic(b, bins, "fieldgate/gateway/cmd/fieldgate")
	images := filepath.Join(dir, "images")
	if err := os.MkdirAll(images, 0o755); err != nil {
		b.Fatal(err)
	}
	for name, pkg := range map[string]string{"fieldgate/collector-modbus": "fieldgate/collectors/cmd/modbus-collector",
		"fieldgate/collector-opcua": "fieldgate/collectors/cmd/opcua-collector"} {
		bin := buildStatic(b, bins, pkg)
		if _, err := ociimage.Build(ociimage.Config{Name: name, Tags: []string{"bench"},
			Binaries: map[string]string{"linux/" + goruntime.GOARCH: bin}},
			filepath.Join(images, filepath.Base(name)+".tar")); err != nil {
			b.Fatal(err)
		}
	}
	ctrd := testpeer.Containerd(b)
	broker := benchBroker(b)
	addrs := startPlant(b, plcs)
	uaPort := testpeer.FreePort(b)
	devsimBin := testpeer.GoBuild(b, "fieldgate/devices/cmd/devsim")
	testpeer.Start(b, devsimBin, "opcua", "--port", fmt.Sprint(uaPort), "--vars", fmt.Sprint(items), "--log-level", "warn")
	testpeer.WaitFor(b, 2*time.Minute, "devsim opcua listening", func() bool { return dialable(fmt.Sprintf("127.0.0.1:%d", uaPort)) })

	listen := fmt.Sprintf("127.0.0.1:%d", testpeer.FreePort(b))
	cfgPath := filepath.Join(dir, "gateway.yaml")
	f, err := os.Create(cfgPath)
	if err != nil {
		b.Fatal(err)
	}
	w := bufio.NewWriter(f)
	fmt.Fprintf(w, "version: 1\ngateway: {id: bench, data_dir: %q, listen: %q}\n", dir, listen)
	fmt.Fprintf(w, "runtime: {address: %q, namespace: %q, snapshotter: %q}\n", ctrd.Address, ctrd.Namespace, ctrd.Snapshotter)
	fmt.Fprintf(w, "mqtt: {broker: %q}\ncollectors:\n", "tcp://"+broker)
	fmt.Fprintf(w, "  - name: modbus\n    image: fieldgate/collector-modbus:bench\n    poll_interval: 100ms\n    env: {LOG_LEVEL: warn}\n")
	fmt.Fprintf(w, "    modbus:\n      transport: tcp\n      timeout: 2s\n      devices:\n")
	for i, a := range addrs {
		fmt.Fprintf(w, "        - {name: plc%04d, address: %q, profile: fieldgate-plc100}\n", i+1, a)
	}
	fmt.Fprintf(w, "  - name: opcua\n    image: fieldgate/collector-opcua:bench\n    poll_interval: 1s\n    env: {LOG_LEVEL: warn}\n")
	fmt.Fprintf(w, "    opcua:\n      endpoint: opc.tcp://127.0.0.1:%d\n      security: {policy: None, mode: None}\n      nodes:\n", uaPort)
	for i := 0; i < items; i++ {
		fmt.Fprintf(w, "        - {device: dev%03d, name: v%d, node_id: \"ns=1;s=Bulk.%d\"}\n", i%(items/perDevice), i, i)
	}
	if err := w.Flush(); err != nil {
		b.Fatal(err)
	}
	f.Close()

	sub := subscribe(b, broker, "fieldgate/bench/data/+/+")
	logs := &testpeer.SyncBuffer{}
	cmd := exec.Command(fieldgate, "run", "--config", cfgPath)
	cmd.Stdout, cmd.Stderr = logs, logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	b.Cleanup(func() {
		// SIGTERM leaves the collectors running (they survive the
		// supervisor); the private containerd's cleanup removes them.
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		if b.Failed() {
			b.Logf("fieldgate log:\n%s", logs.String())
		}
	})
	started := time.Now()
	var st gatewayStatus
	testpeer.WaitFor(b, 3*time.Minute, "both collectors running and every device publishing", func() bool {
		select {
		case <-exited:
			b.Fatalf("fieldgate exited:\n%s", logs.String())
		default:
		}
		st = gatewayStatus{}
		resp, err := http.Get("http://" + listen + "/status")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		if json.NewDecoder(resp.Body).Decode(&st) != nil || len(st.Collectors) != 2 {
			return false
		}
		for _, c := range st.Collectors {
			if c.State != "running" || c.Pid == 0 {
				return false
			}
		}
		return sub.devicesSeen() == plcs+items/perDevice
	})
	pids := []int{cmd.Process.Pid, st.Collectors[0].Pid, st.Collectors[1].Pid}
	b.Logf("both collectors publishing %.1f s after the start (pids %v)", time.Since(started).Seconds(), pids)
	if rest := 20*time.Second - time.Since(started); rest > 0 {
		time.Sleep(rest)
	}
	rss := watchRSS(func() []int { return pids }, 100*time.Millisecond)
	sub.start()
	time.Sleep(30 * time.Second)
	tr := sub.stop()
	sum := float64(rss.Stop()) / mib
	var now, peaks []string
	var peakSum float64
	for _, pid := range pids {
		s, err := sampleProc(pid)
		if err != nil {
			b.Fatalf("pid %d: %v", pid, err)
		}
		now = append(now, fmt.Sprintf("%.1f", float64(s.RSS)/mib))
		peaks = append(peaks, fmt.Sprintf("%.1f", float64(s.HWM)/mib))
		peakSum += float64(s.HWM) / mib
	}
	b.Logf("RSS summed %.1f MiB in the window (supervisor, %s, %s at its end: %s MiB); peaks since start %s MiB, summed %.1f; %d readings/s, latency p50 %v p99 %v, %d bad",
		sum, st.Collectors[0].Name, st.Collectors[1].Name, strings.Join(now, ", "), strings.Join(peaks, ", "), peakSum, tr.Readings/30, tr.P50, tr.P99, tr.Bad)
	b.ReportMetric(sum, "rss-MiB")
	b.ReportMetric(peakSum, "peak-rss-MiB")
}
