// Command modbus-collector polls Modbus RTU and TCP devices and publishes
// their readings to MQTT (DESIGN.md, "MQTT contract").
//
// It is configured by the collector environment (POLL_INTERVAL, MQTT_BROKER,
// DATA_DIR, ...; DESIGN.md, "Collector environment") plus the device file
// named by COLLECTOR_CONFIG (default /etc/fieldgate/collector.yaml): the
// content of a gateway.yaml `modbus:` section, or a file whose only key is
// `modbus:`.
//
// Exit status: 0 after SIGINT/SIGTERM, 2 for a bad environment or config
// file (every problem printed, as FILE:LINE: message for the file), 1 for
// any other failure.
//
// `modbus-collector scan --port DEVICE | --tcp HOST:PORT` probes a line for
// units and serial settings and matches device profiles (scan.go); it
// exits 1 when no unit answered.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"fieldgate/collectors/modbus"
	"fieldgate/collectors/output"
	"fieldgate/collectors/runenv"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// stopDeadline bounds a graceful stop: the poll in progress ends (at most
// one request timeout), then the publisher drains its window.
const stopDeadline = 10 * time.Second

// configError is a problem the operator must fix in the environment or the
// config file (exit status 2).
type configError struct{ err error }

func (e configError) Error() string { return e.err.Error() }
func (e configError) Unwrap() error { return e.err }

func main() {
	if len(os.Args) > 1 && os.Args[1] == "scan" {
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
		err := runScan(ctx, os.Args[2:], os.Stdout, os.Stderr)
		stop()
		exitOn(err)
		return
	}
	showVersion := flag.Bool("version", false, "print the version and exit")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: modbus-collector [-version]\n       modbus-collector scan (--port DEVICE | --tcp HOST:PORT) [flags]   (scan -h for its flags)\n\n"+
			"Configured by environment: POLL_INTERVAL, MQTT_BROKER, MQTT_USERNAME, MQTT_PASSWORD_FILE,\n"+
			"MQTT_CA_FILE, MQTT_CERT_FILE, MQTT_KEY_FILE, MQTT_TOPIC_PREFIX, GATEWAY_ID, COLLECTOR_NAME,\n"+
			"COLLECTOR_CONFIG (device file), DATA_DIR, LOG_LEVEL, QUEUE_*, MQTT_PAYLOAD (fieldgate or sparkplug),\n"+
			"SPARKPLUG_GROUP_ID, SPARKPLUG_PRIMARY_HOST_ID, SPARKPLUG_ALIASES.\n")
	}
	flag.Parse()
	if *showVersion {
		fmt.Println("modbus-collector", version)
		return
	}
	if flag.NArg() > 0 {
		flag.Usage()
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, os.Getenv, os.Stderr)
	stop()
	exitOn(err)
}

// exitOn exits with status 2 for a configError, 1 for any other error.
func exitOn(err error) {
	if err == nil {
		return
	}
	fmt.Fprintf(os.Stderr, "modbus-collector: %v\n", err)
	var ce configError
	if errors.As(err, &ce) {
		os.Exit(2)
	}
	os.Exit(1)
}

// run starts the publisher and the poller and returns when ctx is cancelled
// (nil) or either fails. On stop the poller ends first so that its last
// batches still reach the publisher, which then drains and says "offline".
func run(ctx context.Context, getenv func(string) string, stderr io.Writer) error {
	env, err := runenv.Load(getenv, "modbus")
	if err != nil {
		return configError{err}
	}
	log := env.Logger(stderr)
	cfg, err := modbus.LoadConfig(env.ConfigPath)
	if err != nil {
		return configError{err}
	}
	out, err := output.New(env, version, cfg.Schema(), log)
	if err != nil {
		return configError{err}
	}
	poller, err := modbus.NewPoller(cfg, env.PollInterval, out, log)
	if err != nil {
		return configError{fmt.Errorf("%s: %w", env.ConfigPath, err)}
	}
	if err := out.EnableWrites(poller); err != nil {
		return err
	}
	log.Info("modbus collector starting", "version", version, "config", env.ConfigPath,
		"transport", cfg.Transport, "devices", len(cfg.Devices), "poll_interval", env.PollInterval,
		"broker", env.Broker, "payload", env.Payload)

	err = out.Serve(ctx, poller, stopDeadline)
	for _, st := range poller.Stats() {
		log.Info("device counters", "device", st.Device, "polls", st.Polls, "requests", st.Requests,
			"errors", st.Errors, "timeouts", st.Timeouts, "exceptions", st.Exceptions,
			"garbage", st.Garbage, "skipped_cycles", st.Skipped, "backed_off_cycles", st.BackedOff)
	}
	log.Info("stopped")
	return err
}
