package main

import (
	"context"
	"fmt"
	"io"

	"fieldgate/devices/profiles"
)

func init() {
	commands["profiles"] = command{
		summary: "list the embedded device profiles, or print one's register map (devsim profiles [NAME])",
		run:     runProfiles,
	}
}

func runProfiles(_ context.Context, args []string, stdout, _ io.Writer) error {
	switch len(args) {
	case 0:
		all, err := profiles.All()
		if err != nil {
			return err
		}
		return profiles.WriteList(stdout, all)
	case 1:
		p, err := profiles.Lookup(args[0])
		if err != nil {
			return err
		}
		return p.WriteTags(stdout)
	default:
		return fmt.Errorf("%w: devsim profiles takes at most one profile name", errUsage)
	}
}
