package main

import (
	"flag"
	"fmt"
	"io"

	"fieldgate/devices/profiles"
)

// cmdProfiles lists the embedded device profile library (`fieldgate
// profiles`) or prints one profile's tags (`fieldgate profiles show NAME`),
// the names a device's `profile:` takes in gateway.yaml.
func cmdProfiles(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("profiles", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: fieldgate profiles            list the device profiles\n       fieldgate profiles show NAME  print a profile's tags")
	}
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return nil
		}
		return usageError("profiles: %v", err)
	}
	rest := fs.Args()
	switch {
	case len(rest) == 0:
		all, err := profiles.All()
		if err != nil {
			return err
		}
		return profiles.WriteList(stdout, all)
	case rest[0] == "show" && len(rest) == 2:
		p, err := profiles.Lookup(rest[1])
		if err != nil {
			return usageError("profiles show: %v", err)
		}
		return p.WriteTags(stdout)
	case rest[0] == "show":
		return usageError("profiles show takes one profile name (see fieldgate profiles)")
	}
	return usageError("profiles: unknown argument %q (valid: show NAME)", rest[0])
}
