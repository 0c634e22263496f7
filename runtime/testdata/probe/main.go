// Command probe is the collector stand-in that runtime tests run in a
// container. It reports what it sees inside into $DATA_DIR and its log:
//
//	report.json      env, config file content, hostname, write attempts
//	device-open      "ok" or the error opening $PROBE_DEVICE
//	device.txt       the first line read from $PROBE_DEVICE ("pong\n" is written back),
//	                 or the hex of 4 bytes when PROBE_DEVICE_READ=bytes
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
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
)

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func main() {
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
