// Command opcua-collector subscribes to (or polls) the variables of an OPC UA
// server and publishes their readings to MQTT (DESIGN.md, "MQTT contract").
//
// It is configured by the collector environment (POLL_INTERVAL, MQTT_BROKER,
// DATA_DIR, ...; DESIGN.md, "Collector environment") plus the file named by
// COLLECTOR_CONFIG (default /etc/fieldgate/collector.yaml): the content of a
// gateway.yaml `opcua:` section, or a file whose only key is `opcua:`.
// OPCUA_ENDPOINT, OPCUA_MODE, OPCUA_SECURITY and OPCUA_NODES override the
// file, or replace it when it does not exist (see opcua.ApplyEnv).
//
//	opcua-collector browse --endpoint URL [--node ID] [--depth N] [--policy P --mode M]
//	    [--user U --password-file F [--allow-plaintext-password]]
//
// prints the server's address space (node id, browse path, data type) to
// help write the `nodes:` list.
//
// Exit status: 0 after SIGINT/SIGTERM, 2 for a bad environment, command line
// or config file (every problem printed, as FILE:LINE: message for the
// file), 1 for any other failure.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"fieldgate/collectors/configfile"
	"fieldgate/collectors/opcua"
	"fieldgate/collectors/output"
	"fieldgate/collectors/runenv"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// stopDeadline bounds a graceful stop: the session is closed (2 s at most),
// then the publisher drains its window.
const stopDeadline = 10 * time.Second

// configError is a problem the operator must fix in the environment, the
// command line or the config file (exit status 2).
type configError struct{ err error }

func (e configError) Error() string { return e.err.Error() }
func (e configError) Unwrap() error { return e.err }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := dispatch(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintf(os.Stderr, "opcua-collector: %v\n", err)
		var ce configError
		if errors.As(err, &ce) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

func dispatch(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "browse" {
		return browse(ctx, args[1:], getenv, stdout, stderr)
	}
	fs := flag.NewFlagSet("opcua-collector", flag.ContinueOnError)
	fs.SetOutput(stderr)
	showVersion := fs.Bool("version", false, "print the version and exit")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: opcua-collector [-version]\n"+
			"       opcua-collector browse --endpoint URL [--node ID] [--depth N] [flags]\n\n"+
			"Configured by environment: POLL_INTERVAL, MQTT_BROKER, MQTT_USERNAME, MQTT_PASSWORD_FILE,\n"+
			"MQTT_CA_FILE, MQTT_CERT_FILE, MQTT_KEY_FILE, MQTT_TOPIC_PREFIX, GATEWAY_ID, COLLECTOR_NAME,\n"+
			"COLLECTOR_CONFIG (the opcua section), DATA_DIR, LOG_LEVEL, QUEUE_*, MQTT_PAYLOAD (fieldgate or\n"+
			"sparkplug), SPARKPLUG_GROUP_ID, SPARKPLUG_PRIMARY_HOST_ID, SPARKPLUG_ALIASES; OPCUA_ENDPOINT, OPCUA_MODE,\n"+
			"OPCUA_SECURITY (POLICY/MODE or None) and OPCUA_NODES (DEVICE/NAME=NODE_ID,...) override the file.\n")
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return configError{err}
	}
	if *showVersion {
		fmt.Fprintln(stdout, "opcua-collector", version)
		return nil
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return configError{fmt.Errorf("unexpected argument %q", fs.Arg(0))}
	}
	return run(ctx, getenv, stderr)
}

// run starts the publisher and the engine and returns when ctx is cancelled
// (nil) or either fails. On stop the engine ends first so that its last
// batches still reach the publisher, which then drains and says "offline".
func run(ctx context.Context, getenv func(string) string, stderr io.Writer) error {
	env, err := runenv.Load(getenv, "opcua")
	if err != nil {
		return configError{err}
	}
	log := env.Logger(stderr)
	cfg, err := loadConfig(env.ConfigPath, getenv)
	if err != nil {
		return configError{err}
	}
	out, err := output.New(env, version, cfg.Schema(), log)
	if err != nil {
		return configError{err}
	}
	engine, err := opcua.New(cfg, out, opcua.WithLogger(log), opcua.WithDataDir(env.DataDir),
		opcua.WithPollInterval(env.PollInterval))
	if err != nil {
		return configError{fmt.Errorf("%s: %w", env.ConfigPath, err)}
	}
	if err := out.EnableWrites(engine); err != nil {
		return err
	}
	mode := cfg.Mode
	if mode == "" {
		mode = opcua.ModeSubscribe
	}
	log.Info("opcua collector starting", "version", version, "config", env.ConfigPath, "endpoint", cfg.Endpoint,
		"mode", mode, "nodes", len(cfg.Nodes), "poll_interval", env.PollInterval, "broker", env.Broker, "payload", env.Payload)

	err = out.Serve(ctx, engine, stopDeadline)
	log.Info("stopped")
	return err
}

// loadConfig reads the collector file and applies the OPCUA_* overrides. A
// missing file is fine when the environment alone describes the collector
// (OPCUA_ENDPOINT and OPCUA_NODES), as on a lab bench.
func loadConfig(path string, getenv func(string) string) (opcua.Config, error) {
	var cfg opcua.Config
	data, err := configfile.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist) && getenv(opcua.EnvEndpoint) != "":
	case err != nil:
		return cfg, fmt.Errorf("read opcua config: %w", err)
	default:
		if cfg, err = opcua.Parse(path, data); err != nil {
			return cfg, err
		}
	}
	return cfg, cfg.ApplyEnv(getenv)
}

// browse prints the address space below --node.
func browse(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("opcua-collector browse", flag.ContinueOnError)
	fs.SetOutput(stderr)
	endpoint := fs.String("endpoint", "", "server URL, opc.tcp://HOST:PORT (required)")
	node := fs.String("node", "", "node id to start from (default the Objects folder, i=85)")
	depth := fs.Int("depth", 3, "levels to walk below --node")
	policy := fs.String("policy", "", "security policy: None, Basic256Sha256, Aes128_Sha256_RsaOaep, Aes256_Sha256_RsaPss (default: the best SignAndEncrypt endpoint)")
	mode := fs.String("mode", "", "security mode: None, Sign, SignAndEncrypt (with --policy)")
	user := fs.String("user", "", "user name (with --password-file)")
	passwordFile := fs.String("password-file", "", "file holding the password")
	allowPlaintext := fs.Bool("allow-plaintext-password", false, "accept sending the password unencrypted (security policy None)")
	trustDir := fs.String("trust-dir", "", "trusted server certificates (default DATA_DIR/pki/trusted)")
	defData := getenv("DATA_DIR")
	if defData == "" {
		if d, err := os.UserCacheDir(); err == nil {
			defData = filepath.Join(d, "fieldgate-opcua")
		} else {
			defData = "."
		}
	}
	dataDir := fs.String("data-dir", defData, "where the client certificate is kept (default $DATA_DIR)")
	timeout := fs.Duration("timeout", time.Minute, "give up after this long")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: opcua-collector browse --endpoint URL [--node ID] [--depth N] [flags]\n\n"+
			"Prints NODE_ID<TAB>BROWSE_PATH<TAB>DATA_TYPE for every object and variable below --node.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return configError{err}
	}
	if fs.NArg() > 0 {
		return configError{fmt.Errorf("browse: unexpected argument %q", fs.Arg(0))}
	}
	if *endpoint == "" {
		fs.Usage()
		return configError{errors.New("browse: --endpoint is required")}
	}
	cfg := opcua.Config{Endpoint: *endpoint, TrustDir: *trustDir}
	if *policy != "" || *mode != "" {
		m := *mode
		if m == "" && *policy == opcua.PolicyNone {
			m = opcua.SecModeNone
		}
		if m == "" {
			m = opcua.SecModeSignAndEncrypt
		}
		cfg.Security = &opcua.Security{Policy: *policy, Mode: m}
		if cfg.Security.Policy == "" && m == opcua.SecModeNone {
			cfg.Security.Policy = opcua.PolicyNone
		}
	}
	if *user != "" || *passwordFile != "" {
		cfg.Auth = &opcua.Auth{Username: *user, PasswordFile: *passwordFile, AllowPlaintextPassword: *allowPlaintext}
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	err := opcua.Browse(ctx, cfg, stdout, opcua.BrowseOptions{Root: *node, Depth: *depth}, opcua.WithDataDir(*dataDir))
	var cfgErr interface{ Lines() []string }
	if errors.As(err, &cfgErr) {
		return configError{err}
	}
	return err
}
