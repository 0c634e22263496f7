// Command probe is the collector stand-in that runtime tests run in a
// container. It reports what it sees inside into $DATA_DIR and its log:
//
//	report.json      env, config file content, hostname, write attempts
//	device-open      "ok" or the error opening $PROBE_DEVICE
//	device.txt       the first line read from $PROBE_DEVICE ("pong\n" is written back),
//	                 or the hex of 4 bytes when PROBE_DEVICE_READ=bytes
//
// report.json also holds what the probe may do inside — the answers a
// compromised collector would get: its uid, gid and groups, its capabilities,
// no_new_privs and seccomp mode (/proc/self/status), and the error (or "")
// of opening a raw socket, mounting a tmpfs, becoming root, and running a
// program copied into /tmp; PROBE_SECRET names a file it tries to read.
//
// PROBE_LOG_LINES=N prints N numbered lines, then creates log-lines-done; PROBE_IGNORE_TERM=1 ignores
// SIGTERM (as PID 1 without a handler does); PROBE_EXIT=N exits with code N
// after reporting. Otherwise it runs until SIGTERM and prints "probe stopping".
package main

import (
	"bufio"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "exec-check" {
		os.Exit(0) // run from /tmp: it should never get here
	}
	fmt.Println("probe started")
	fmt.Fprintln(os.Stderr, "probe stderr")
	data := os.Getenv("DATA_DIR")

	term := make(chan os.Signal, 1)
	if os.Getenv("PROBE_IGNORE_TERM") == "1" {
		// Waiting on a signal channel keeps the runtime from calling a
		// blocked main a deadlock; SIGUSR2 is never sent.
		signal.Ignore(syscall.SIGTERM)
		signal.Notify(term, syscall.SIGUSR2)
	} else {
		signal.Notify(term, syscall.SIGTERM)
	}

	cfg, cfgErr := os.ReadFile("/etc/fieldgate/collector.yaml")
	host, _ := os.Hostname()
	report := map[string]any{
		"env":          os.Environ(),
		"config":       string(cfg),
		"config_error": errText(cfgErr),
		"config_write": errText(os.WriteFile("/etc/fieldgate/collector.yaml", []byte("x"), 0o644)),
		"rootfs_write": errText(os.WriteFile("/probe-rootfs-test", []byte("x"), 0o644)),
		"tmp_write":    errText(os.WriteFile("/tmp/probe-test", []byte("x"), 0o644)),
		"hostname":     host,
		"uid":          os.Getuid(),
		"gid":          os.Getgid(),
		"groups":       groups(),
		"proc_status":  procStatus("CapEff", "CapPrm", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp"),
		"raw_socket":   errText(rawSocket()),
		"mount":        errText(mountTmpfs()),
		"setuid_root":  errText(syscall.Setuid(0)),
		"tmp_exec":     errText(execFromTmp()),
	}
	if p := os.Getenv("PROBE_SECRET"); p != "" {
		b, err := os.ReadFile(p)
		report["secret"], report["secret_error"] = string(b), errText(err)
	}
	if st, err := os.Stat(data); err == nil {
		report["data_dir_mode"] = fmt.Sprintf("%#o", st.Mode().Perm())
	}
	b, _ := json.Marshal(report)
	if err := writeAtomic(filepath.Join(data, "report.json"), b); err != nil {
		fmt.Fprintln(os.Stderr, "probe: report:", err)
	}

	if n, _ := strconv.Atoi(os.Getenv("PROBE_LOG_LINES")); n > 0 {
		for i := 0; i < n; i++ {
			fmt.Printf("log line %06d ..........................................\n", i)
		}
		fmt.Println("log lines done")
		_ = writeAtomic(filepath.Join(data, "log-lines-done"), []byte("ok"))
	}

	if dev := os.Getenv("PROBE_DEVICE"); dev != "" {
		go probeDevice(dev, data, os.Getenv("PROBE_DEVICE_READ"))
	}

	if s := os.Getenv("PROBE_EXIT"); s != "" {
		code, _ := strconv.Atoi(s)
		os.Exit(code)
	}
	<-term
	fmt.Println("probe stopping")
}

func probeDevice(dev, data, mode string) {
	f, err := os.OpenFile(dev, os.O_RDWR|syscall.O_NOCTTY, 0)
	status := "ok"
	if err != nil {
		status = err.Error()
	}
	_ = writeAtomic(filepath.Join(data, "device-open"), []byte(status))
	if err != nil {
		return
	}
	if mode == "bytes" {
		buf := make([]byte, 4)
		if _, err := io.ReadFull(f, buf); err != nil {
			_ = writeAtomic(filepath.Join(data, "device.txt"), []byte("error: "+err.Error()))
			return
		}
		_ = writeAtomic(filepath.Join(data, "device.txt"), []byte(hex.EncodeToString(buf)))
		return
	}
	line, err := bufio.NewReader(f).ReadString('\n')
	if err != nil {
		line = "error: " + err.Error()
	}
	_ = writeAtomic(filepath.Join(data, "device.txt"), []byte(line))
	_, _ = f.Write([]byte("pong\n"))
}

func writeAtomic(path string, b []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func groups() []int {
	g, _ := os.Getgroups()
	return g
}

// procStatus returns the named lines of /proc/self/status.
func procStatus(keys ...string) map[string]string {
	out := map[string]string{}
	b, _ := os.ReadFile("/proc/self/status")
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		for _, want := range keys {
			if k == want {
				out[k] = strings.TrimSpace(v)
			}
		}
	}
	return out
}

// rawSocket opens a raw IP socket (what sniffing or spoofing Modbus TCP on
// the host network needs: CAP_NET_RAW).
func rawSocket() error {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_RAW, syscall.IPPROTO_TCP)
	if err == nil {
		syscall.Close(fd)
	}
	return err
}

func mountTmpfs() error {
	dir := "/tmp/probe-mount"
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=1m")
	if err == nil {
		syscall.Unmount(dir, 0)
	}
	return err
}

// execFromTmp copies the probe's own binary into /tmp and runs it.
func execFromTmp() error {
	self, err := os.ReadFile("/proc/self/exe")
	if err != nil {
		return fmt.Errorf("read own binary: %w", err)
	}
	dst := "/tmp/probe-exec"
	if err := os.WriteFile(dst, self, 0o755); err != nil {
		return fmt.Errorf("copy to /tmp: %w", err)
	}
	return exec.Command(dst, "exec-check").Run()
}
