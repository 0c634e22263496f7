package main

import (
	"flag"
	"fmt"
	"io"
	"path/filepath"

	"fieldgate/gateway/supervisor"
	"fieldgate/runtime/logrotate"
)

// cmdLogs prints a collector's recent log lines. It reads the rotated log
// files the runtime's log driver writes under {data_dir}/logs/NAME/
// directly, so it works while the supervisor is down; lines an earlier
// version wrote under {data_dir}/collectors/NAME/logs/ (inside the data dir
// the collector can write) come first, read without following any link.
func cmdLogs(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("logs", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", defaultConfigPath, "gateway config `FILE` (for gateway.data_dir)")
	n := fs.Int("n", 100, "number of lines")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageError("logs: want one collector NAME, got %d arguments", len(pos))
	}
	name := pos[0]
	cfg, err := loadConfig(*path, stderr, 1)
	if err != nil {
		return err
	}
	known := false
	for _, c := range cfg.Collectors {
		known = known || c.Name == name
	}
	if !known && (filepath.Base(name) != name || name == "." || name == "..") {
		return fmt.Errorf("no collector %q in %s", name, *path) // a name becomes part of a path
	}
	logPath := supervisor.LogPath(cfg, name)
	lines, err := logrotate.LastLines(logPath, *n)
	if err != nil {
		return fmt.Errorf("logs of %q: %w", name, err)
	}
	if len(lines) < *n {
		older, err := logrotate.LastLinesBeneath(supervisor.LegacyLogDir(cfg, name), supervisor.LegacyLogName, *n-len(lines))
		if err != nil {
			return fmt.Errorf("logs of %q: %w", name, err)
		}
		lines = append(older, lines...)
	}
	if len(lines) == 0 && !known {
		return fmt.Errorf("no collector %q in %s and no log at %s", name, *path, logPath)
	}
	for _, l := range lines {
		fmt.Fprintln(stdout, l)
	}
	return nil
}
