package main

import (
	"context"
	"errors"
	"flag"
	"io"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"fieldgate/collectors/publish"
	"fieldgate/gateway/config"
	"fieldgate/gateway/supervisor"
	"fieldgate/gateway/watch"
)

// defaultSnapshotWait is how long `fieldgate watch` listens before it prints
// its one plain snapshot when its output is not a terminal.
const defaultSnapshotWait = 5 * time.Second

// cmdWatch shows every device tag and collector of a gateway live, from its
// MQTT broker; on output that is not a terminal (or with --once) it prints
// one plain snapshot instead.
func cmdWatch(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("watch", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", defaultConfigPath, "gateway config `FILE`: broker, credentials, topic prefix, gateway id, poll intervals")
	broker := fs.String("broker", "", "MQTT broker (host, host:port or tcp://, ssl://, ws:// URL; default mqtt.broker of --config)")
	prefix := fs.String("prefix", "", "topic prefix (default mqtt.topic_prefix of --config, else fieldgate)")
	gateway := fs.String("gateway", "", "gateway id, + for every gateway under the prefix (default gateway.id of --config, else +)")
	addr := fs.String("addr", "", "supervisor HTTP `HOST:PORT` to poll /status from (restarts, state, the collectors' MQTT connection)")
	stale := fs.Duration("stale", 0, "mark a tag stale after this long without an update (default 3 × its collector's poll interval, or 3 × the observed batch interval)")
	once := fs.Duration("once", 0, "listen this long, print one plain snapshot and exit (the default, 5s, when the output is not a terminal)")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usageError("watch: unexpected argument %q", pos[0])
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })

	cfg := watch.Config{Prefix: *prefix, Gateway: *gateway, StaleAfter: *stale}
	cfg.Subscriber.Broker = *broker
	gc, err := loadForView(*path, set["config"], stderr)
	if err != nil {
		return err
	}
	if gc != nil {
		if cfg.Subscriber.Broker == "" {
			cfg.Subscriber.Broker = gc.MQTT.Broker
		}
		cfg.Subscriber.Credentials = publish.Credentials{Username: gc.MQTT.Username, PasswordFile: gc.MQTT.PasswordFile,
			CAFile: gc.MQTT.TLS.CAFile, CertFile: gc.MQTT.TLS.CertFile, KeyFile: gc.MQTT.TLS.KeyFile}
		if cfg.Prefix == "" {
			cfg.Prefix = gc.MQTT.TopicPrefix
		}
		if cfg.Gateway == "" {
			cfg.Gateway = gc.Gateway.ID
		}
		cfg.Intervals = map[string]time.Duration{}
		for _, c := range gc.Collectors {
			cfg.Intervals[c.Name] = time.Duration(c.PollInterval)
		}
	}
	if cfg.Subscriber.Broker == "" {
		return usageError("watch: no broker: give --broker, or --config with mqtt.broker (%s not found)", *path)
	}
	if *addr != "" {
		a := *addr
		cfg.Supervisor = func(ctx context.Context) (supervisor.Status, error) {
			st, _, err := fetchStatus(ctx, a)
			return st, err
		}
	}

	wait := *once
	if wait <= 0 && !(isTerminal(stdin) && isTerminal(stdout)) {
		wait = defaultSnapshotWait
	}
	if wait > 0 {
		return watch.Snapshot(ctx, cfg, wait, stdout)
	}
	return watch.Run(ctx, cfg, stdin, stdout)
}

// loadForView loads gateway.yaml for a command that only looks at the
// gateway (watch, devices): a device missing from this machine — an
// unplugged adapter, the very thing one looks for — is not an error here.
// A default path that does not exist gives nil; an explicit one is required.
func loadForView(path string, explicit bool, stderr io.Writer) (*config.Config, error) {
	if _, err := os.Stat(path); !explicit && errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	anyDevice := config.WithStat(func(string) (os.FileInfo, error) { return nil, nil })
	return loadConfig(path, stderr, 1, anyDevice)
}

// isTerminal reports whether f is a terminal.
func isTerminal(f any) bool {
	file, ok := f.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(file.Fd()), unix.TCGETS)
	return err == nil
}
