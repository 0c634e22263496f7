// Command fieldgate is the gateway supervisor: it runs one containerd
// container per collector of gateway.yaml and keeps them running.
//
//	fieldgate run --config FILE [--stop-collectors] [--log-level LEVEL]
//	fieldgate validate --config FILE
//	fieldgate status [--addr HOST:PORT | --config FILE]
//	fieldgate logs NAME [--config FILE] [-n N]
//	fieldgate stop NAME [--addr HOST:PORT | --config FILE]
//	fieldgate start NAME [--addr HOST:PORT | --config FILE]
//	fieldgate watch [--config FILE] [--broker URL] [--prefix P] [--gateway ID] [--addr HOST:PORT] [--stale D] [--once D]
//	fieldgate devices [--config FILE] [--json]
//	fieldgate profiles [show NAME]
//	fieldgate update [--config FILE] [--allow-downgrade] [--wait] BUNDLE
//	fieldgate update --status | --boot [--config FILE]
//	fieldgate bundle keygen|manifest|sign|verify …
//	fieldgate version
//
// Exit codes: 0 success, 1 failure (validate: problems found), 2 usage error
// or invalid config at start.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	fgruntime "fieldgate/runtime"
)

// version is set at build time: -ldflags "-X main.version=…".
var version = "dev"

// exitError carries an exit code other than 1.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// errSilent is an exit status whose message has been printed already.
var errSilent = errors.New("")

func usageError(format string, args ...any) error {
	return &exitError{code: 2, err: fmt.Errorf(format, args...)}
}

const usage = `usage:
  fieldgate run --config FILE [--stop-collectors] [--log-level LEVEL]
  fieldgate validate --config FILE
  fieldgate status [--addr HOST:PORT | --config FILE]
  fieldgate logs NAME [--config FILE] [-n N]
  fieldgate stop NAME [--addr HOST:PORT | --config FILE]
  fieldgate start NAME [--addr HOST:PORT | --config FILE]
  fieldgate watch [--config FILE] [--broker URL] [--prefix P] [--gateway ID] [--addr HOST:PORT] [--stale D] [--once D]
  fieldgate devices [--config FILE] [--json]
  fieldgate profiles [show NAME]
  fieldgate update [--config FILE] [--allow-downgrade] [--wait] BUNDLE
  fieldgate update --status [--json] | --boot [--config FILE]
  fieldgate bundle keygen|manifest|sign|verify …
  fieldgate version
`

func main() {
	// The containerd shim runs this same executable as the collectors' log
	// driver (see fieldgate/runtime): that must be checked first.
	if fgruntime.IsLogDriver(os.Args[1:]) {
		if err := fgruntime.RunLogDriver(os.Args[1:]); err != nil {
			fmt.Fprintln(os.Stderr, "fieldgate log driver:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err == nil {
		return
	}
	code := 1
	var ee *exitError
	if errors.As(err, &ee) {
		code = ee.code
	}
	if msg := err.Error(); msg != "" {
		fmt.Fprintln(os.Stderr, "fieldgate:", msg)
	}
	os.Exit(code)
}

// run dispatches a subcommand.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return &exitError{code: 2, err: errSilent}
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "run":
		return cmdRun(ctx, rest, stderr)
	case "validate":
		return cmdValidate(rest, stdout, stderr)
	case "status":
		return cmdStatus(ctx, rest, stdout, stderr)
	case "logs":
		return cmdLogs(rest, stdout, stderr)
	case "stop", "start":
		return cmdControl(ctx, cmd, rest, stdout, stderr)
	case "watch":
		return cmdWatch(ctx, rest, os.Stdin, stdout, stderr)
	case "devices":
		return cmdDevices(rest, stdout, stderr)
	case "profiles":
		return cmdProfiles(rest, stdout, stderr)
	case "update":
		return cmdUpdate(ctx, rest, stdout, stderr)
	case "bundle":
		return cmdBundle(rest, stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, version)
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return usageError("unknown command %q (valid: run, validate, status, logs, stop, start, watch, devices, profiles, update, bundle, version)", cmd)
}
