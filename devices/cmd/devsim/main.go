// Command devsim runs device simulators that serve a device profile with
// values that change over time, for lab benches, demos and tests.
//
//	devsim modbus --tcp 127.0.0.1:5020 --unit 1=eastron-sdm630 --unit 2=eastron-sdm120
//	devsim modbus --rtu /dev/pts/3 --baud 19200 --emulate-wire --unit 1=eastron-sdm630 --silent-unit 3
//	devsim profiles [NAME]
//
// Subcommands register themselves in the commands table, one file each
// (modbus.go, profiles.go; an OPC UA simulator adds opcua.go with an init
// function that sets commands["opcua"]).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
)

// command is one devsim subcommand. run gets the arguments after the
// subcommand's name and returns when ctx is cancelled (SIGINT/SIGTERM).
type command struct {
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

// commands maps subcommand names to their implementation; files of this
// package add to it from init functions.
var commands = map[string]command{}

// errUsage marks errors caused by the command line (exit status 2).
var errUsage = errors.New("usage")

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "devsim:", err)
		if errors.Is(err, errUsage) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stderr)
		if len(args) == 0 {
			return fmt.Errorf("%w: no subcommand", errUsage)
		}
		return nil
	}
	c, ok := commands[args[0]]
	if !ok {
		return fmt.Errorf("%w: unknown subcommand %q (valid: %s)", errUsage, args[0], strings.Join(commandNames(), ", "))
	}
	return c.run(ctx, args[1:], stdout, stderr)
}

func commandNames() []string {
	var names []string
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: devsim SUBCOMMAND [flags]   (devsim SUBCOMMAND -h for its flags)")
	for _, n := range commandNames() {
		fmt.Fprintf(w, "  %-10s %s\n", n, commands[n].summary)
	}
}

// newLogger is the text logger on stderr at the given level.
func newLogger(w io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("%w: invalid log level %q (valid: debug, info, warn, error)", errUsage, level)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l})), nil
}
