package main

import (
	"flag"
	"fmt"
	"io"

	"fieldgate/gateway/supervisor"
	"fieldgate/runtime/logrotate"
)

// cmdLogs prints a collector's recent log lines. It reads the rotated log
// files the runtime's log driver writes under
// {data_dir}/collectors/NAME/logs/ directly, so it works while the
// supervisor is down.
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
	logPath := supervisor.LogPath(cfg, name)
	lines, err := logrotate.LastLines(logPath, *n)
	if err != nil {
		return fmt.Errorf("logs of %q: %w", name, err)
	}
	if len(lines) == 0 && !known {
		return fmt.Errorf("no collector %q in %s and no log at %s", name, *path, logPath)
	}
	for _, l := range lines {
		fmt.Fprintln(stdout, l)
	}
	return nil
}
