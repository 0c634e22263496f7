package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"fieldgate/devices/devsim"
	"fieldgate/devices/profiles"
)

func init() {
	commands["modbus"] = command{
		summary: "Modbus TCP and/or RTU slave serving profiles (devsim modbus -h)",
		run:     runModbus,
	}
}

// stopTimeout bounds how long the simulator may take to close after a signal.
const stopTimeout = 5 * time.Second

func runModbus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("devsim modbus", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		cfg      devsim.Config
		units    []devsim.Unit
		silent   []uint8
		faults   = map[uint8]devsim.Fault{}
		logLevel string
		maxRegs  int
	)
	fs.StringVar(&cfg.TCP, "tcp", "", "serve Modbus TCP on `HOST:PORT` (port 0: any free port)")
	fs.StringVar(&cfg.RTU, "rtu", "", "serve Modbus RTU on serial `DEVICE` (/dev/ttyUSB0, or a pty such as /dev/pts/3)")
	fs.IntVar(&cfg.Serial.Baud, "baud", 19200, "RTU baud rate")
	fs.IntVar(&cfg.Serial.DataBits, "data-bits", 8, "RTU data bits (7, 8)")
	fs.StringVar(&cfg.Serial.Parity, "parity", "N", "RTU parity (N, E, O)")
	fs.IntVar(&cfg.Serial.StopBits, "stop-bits", 1, "RTU stop bits (1, 2)")
	fs.BoolVar(&cfg.EmulateWire, "emulate-wire", false, "delay answers by the wire time at --baud (11-bit characters, 3.5-character silences), also over TCP")
	fs.BoolVar(&cfg.ReadGaps, "read-gaps", false, "let reads span unlisted registers between a table's tags (they read 0) instead of exception 2")
	fs.IntVar(&maxRegs, "max-registers", 0, "answer reads of more than `N` registers with exception 3, as many real devices do (0: the protocol's 125)")
	fs.StringVar(&logLevel, "log-level", "info", "log level (debug, info, warn, error)")
	fs.Func("unit", "simulate unit `ID=PROFILE` (an embedded profile name or a YAML file); repeatable", func(s string) error {
		id, rest, err := parseUnitArg(s)
		if err != nil {
			return err
		}
		p, err := profiles.Load(rest)
		if err != nil {
			return err
		}
		units = append(units, devsim.Unit{ID: id, Profile: p})
		return nil
	})
	allProfiles := fs.Bool("all-profiles", false, "also serve every embedded profile, one unit each, at the lowest unit ids no --unit uses (in name order)")
	fs.Func("silent-unit", "unit `ID` never answers (it gets the first --unit's profile if it has none); repeatable", func(s string) error {
		id, err := parseUnitID(s)
		if err != nil {
			return err
		}
		silent = append(silent, id)
		return nil
	})
	fs.Func("fault", "unit misbehaves: `ID=KIND[/N]`, KIND one of silent, bad-crc, wrong-unit, short-frame, on every N-th request (default every one); repeatable", func(s string) error {
		id, rest, err := parseUnitArg(s)
		if err != nil {
			return err
		}
		kind, everyStr, hasEvery := strings.Cut(rest, "/")
		f := devsim.Fault{Kind: devsim.FaultKind(kind), Every: 1}
		if !slices.Contains(devsim.FaultKinds, f.Kind) {
			return fmt.Errorf("unknown fault kind %q (valid: silent, bad-crc, wrong-unit, short-frame)", kind)
		}
		if hasEvery {
			if f.Every, err = strconv.Atoi(everyStr); err != nil || f.Every < 1 {
				return fmt.Errorf("invalid fault period %q in %q (want a whole number >= 1)", everyStr, s)
			}
		}
		faults[id] = f
		return nil
	})
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: devsim modbus (--tcp HOST:PORT | --rtu DEVICE) (--unit ID=PROFILE [--unit ...] | --all-profiles) [flags]")
		fmt.Fprintf(stderr, "profiles: %s\n", strings.Join(profiles.Names(), ", "))
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	if *allProfiles {
		units = withAllProfiles(units)
	}
	if len(units) == 0 {
		return fmt.Errorf("%w: no --unit given (e.g. --unit 1=eastron-sdm630; profiles: %s)", errUsage, strings.Join(profiles.Names(), ", "))
	}
	for _, id := range silent {
		if !slices.ContainsFunc(units, func(u devsim.Unit) bool { return u.ID == id }) {
			units = append(units, devsim.Unit{ID: id, Profile: units[0].Profile})
		}
		faults[id] = devsim.Fault{Kind: devsim.FaultSilent, Every: 1}
	}
	for i := range units {
		units[i].MaxRegisters = maxRegs
	}
	cfg.Units, cfg.Faults = units, faults
	log, err := newLogger(stderr, logLevel)
	if err != nil {
		return err
	}
	sim, err := devsim.NewModbus(cfg, devsim.WithLogger(log))
	if err != nil {
		return err
	}

	errc := make(chan error, 1)
	go func() { errc <- sim.Run(ctx) }()
	if err := sim.WaitReady(ctx); err != nil {
		if ctx.Err() != nil {
			return <-errc
		}
		return err
	}
	var desc []string
	for _, u := range units {
		d := fmt.Sprintf("%d=%s", u.ID, u.Profile.Name)
		if f, ok := faults[u.ID]; ok {
			d += fmt.Sprintf("(%s", f.Kind)
			if f.Every > 1 {
				d += fmt.Sprintf("/%d", f.Every)
			}
			d += ")"
		}
		desc = append(desc, d)
	}
	if cfg.TCP != "" {
		fmt.Fprintf(stdout, "devsim modbus: tcp listening on %s, units %s\n", sim.Addr(), strings.Join(desc, " "))
	}
	if cfg.RTU != "" {
		wire := ""
		if cfg.EmulateWire {
			wire = ", emulating wire time"
		}
		fmt.Fprintf(stdout, "devsim modbus: rtu on %s %d %d%s%d%s, units %s\n", cfg.RTU, cfg.Serial.Baud,
			cfg.Serial.DataBits, cfg.Serial.Parity, cfg.Serial.StopBits, wire, strings.Join(desc, " "))
	}

	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	select {
	case err := <-errc:
		return err
	case <-time.After(stopTimeout):
		return fmt.Errorf("modbus simulator did not stop within %v", stopTimeout)
	}
}

func parseUnitArg(s string) (uint8, string, error) {
	idStr, rest, ok := strings.Cut(s, "=")
	if !ok || rest == "" {
		return 0, "", fmt.Errorf("%q: want ID=VALUE, e.g. 1=eastron-sdm630", s)
	}
	id, err := parseUnitID(idStr)
	return id, rest, err
}

func parseUnitID(s string) (uint8, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > 247 {
		return 0, fmt.Errorf("invalid unit id %q (valid: 1..247)", s)
	}
	return uint8(n), nil
}

// withAllProfiles adds every embedded profile to units, each at the lowest
// unit id not taken yet, in name order.
func withAllProfiles(units []devsim.Unit) []devsim.Unit {
	used := map[uint8]bool{}
	for _, u := range units {
		used[u.ID] = true
	}
	id := uint8(1)
	for _, name := range profiles.Names() {
		for used[id] && id < 247 {
			id++
		}
		p, err := profiles.Lookup(name)
		if err != nil || used[id] {
			continue
		}
		used[id] = true
		units = append(units, devsim.Unit{ID: id, Profile: p})
	}
	return units
}
