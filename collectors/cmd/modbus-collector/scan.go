package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"fieldgate/collectors/modbus"
	"fieldgate/devices/profiles"
)

// errNothingFound is the scan's exit status 1 when no unit answered.
var errNothingFound = errors.New("no unit answered")

const scanUsage = `usage: modbus-collector scan (--port DEVICE | --tcp HOST:PORT) [flags]

Probes unit ids (and on a serial line baud rates and parities) and prints
which units answer, at what settings, and how each device profile's
registers read on them.

`

// runScan is `modbus-collector scan`.
func runScan(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("modbus-collector scan", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		cfg      modbus.ScanConfig
		units    = fs.String("units", "1-247", "unit ids to probe: ids and ranges, e.g. 1-10,20")
		bauds    = fs.String("baud", joinInts(modbus.DefaultScanBauds), "serial: baud rates to try, comma-separated")
		parities = fs.String("parity", strings.Join(modbus.DefaultScanParities, ","), "serial: parities to try (N, E, O), comma-separated")
		profs    []string
		verbose  = fs.Bool("v", false, "print every tag of each unit's best-matching profile")
	)
	fs.StringVar(&cfg.Port, "port", "", "serial device of the RS-485 line, e.g. /dev/ttyUSB0")
	fs.StringVar(&cfg.TCP, "tcp", "", "Modbus TCP server or gateway, HOST[:PORT]")
	fs.IntVar(&cfg.DataBits, "data-bits", modbus.DefaultDataBits, "serial: data bits")
	fs.IntVar(&cfg.StopBits, "stop-bits", modbus.DefaultStopBits, "serial: stop bits")
	fs.DurationVar(&cfg.Timeout, "timeout", 0, fmt.Sprintf("how long an answer may take to start (default %v serial, %v tcp)", modbus.DefaultScanTimeout, modbus.DefaultScanTCPTimeout))
	fs.DurationVar(&cfg.MaxTime, "max-time", modbus.DefaultScanMaxTime, "stop the whole scan after this long")
	fs.Func("profile", "profile to read from every unit found: a name, a YAML file, \"all\" (real devices and synthetic ones) or \"none\"; repeatable (default: every real device's profile)", func(s string) error {
		profs = append(profs, s)
		return nil
	})
	fs.Usage = func() {
		fmt.Fprint(stderr, scanUsage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return configError{err}
	}
	if fs.NArg() > 0 {
		return configError{fmt.Errorf("scan: unexpected argument %q", fs.Arg(0))}
	}
	var errs []error
	var err error
	if cfg.Units, err = modbus.ParseUnits(*units); err != nil {
		errs = append(errs, err)
	}
	if cfg.Port != "" {
		if cfg.Bauds, err = parseInts(*bauds); err != nil {
			errs = append(errs, fmt.Errorf("--baud %q: %w", *bauds, err))
		}
		cfg.Parities = strings.Split(*parities, ",")
	}
	if cfg.Profiles, err = scanProfiles(profs); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return configError{err}
	}
	sc, err := modbus.NewScanner(cfg)
	if err != nil {
		return configError{err}
	}
	cfg = sc.Config()
	line := cfg.Port
	if line == "" {
		line = "tcp " + cfg.TCP
	}
	var settings []string
	for _, l := range sc.Settings() {
		settings = append(settings, l.String())
	}
	fmt.Fprintf(stdout, "scanning %s: unit ids %s", line, *units)
	if cfg.Port != "" {
		fmt.Fprintf(stdout, " at %s", strings.Join(settings, ", "))
	}
	fmt.Fprintf(stdout, " (timeout %v, at most %v)\n", cfg.Timeout, sc.WorstCase().Round(time.Second))

	res, err := sc.Run(ctx, func(h modbus.ScanHit) {
		at := ""
		if cfg.Port != "" {
			at = " at " + h.Line.String()
		}
		fmt.Fprintf(stdout, "unit %d answers%s (%s)\n", h.Unit, at, h.Answer)
	})
	if err != nil {
		return err
	}
	for _, g := range res.Garbage {
		fmt.Fprintf(stdout, "garbled answers at %s: a device is probably there at other settings\n", g)
	}
	if res.AllAnswer {
		fmt.Fprintln(stdout, "every unit id answered: the device ignores the unit id (usual for a Modbus TCP server); profiles read from the first only")
	}
	fmt.Fprintf(stdout, "%d unit(s) found, %d probes in %v\n", len(res.Hits), res.Probes, res.Elapsed.Round(time.Millisecond))
	if res.Stopped != "" {
		fmt.Fprintf(stdout, "stopped early: %s (narrow --units, --baud or --parity)\n", res.Stopped)
	}
	for _, h := range res.Hits {
		if len(h.Profiles) > 0 {
			printMatches(stdout, h, cfg.Port != "", *verbose)
		}
	}
	if len(res.Hits) == 0 {
		return errNothingFound
	}
	return nil
}

// printMatches prints how each profile read on one unit, best first.
func printMatches(w io.Writer, h modbus.ScanHit, serial, verbose bool) {
	at := ""
	if serial {
		at = " at " + h.Line.String()
	}
	fmt.Fprintf(w, "\nunit %d%s:\n", h.Unit, at)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  PROFILE\tREADABLE\tPLAUSIBLE\tSAMPLE")
	unreadable := 0
	for _, m := range h.Profiles {
		if m.Readable == 0 {
			unreadable++
			continue
		}
		var sample []string
		for _, v := range m.Values {
			if v.Plausible && len(sample) < 3 {
				sample = append(sample, formatValue(v))
			}
		}
		fmt.Fprintf(tw, "  %s\t%d/%d\t%d/%d\t%s\n", m.Profile, m.Readable, m.Tags, m.Plausible, m.Tags, strings.Join(sample, "  "))
	}
	tw.Flush()
	if unreadable > 0 {
		fmt.Fprintf(w, "  (%d other profile(s): no register readable)\n", unreadable)
	}
	if verbose && len(h.Profiles) > 0 {
		best := h.Profiles[0]
		fmt.Fprintf(w, "  %s, every tag:\n", best.Profile)
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		for _, v := range best.Values {
			state := "plausible"
			switch {
			case v.Error != "":
				state = v.Error
			case !v.Plausible:
				state = "implausible"
			}
			fmt.Fprintf(tw, "    %s\t%s\n", formatValue(v), state)
		}
		tw.Flush()
	}
}

func formatValue(v modbus.TagValue) string {
	if v.Error != "" {
		return v.Tag + "=?"
	}
	s := fmt.Sprintf("%s=%v", v.Tag, v.Value)
	if str, ok := v.Value.(string); ok {
		s = fmt.Sprintf("%s=%q", v.Tag, str)
	}
	if v.Unit != "" {
		s += " " + v.Unit
	}
	return s
}

// scanProfiles resolves --profile values: none given is every embedded
// profile of a real device, "all" adds the synthetic ones, "none" is no
// matching.
func scanProfiles(args []string) ([]*profiles.Profile, error) {
	var out []*profiles.Profile
	if len(args) == 0 {
		all, err := profiles.All()
		for _, p := range all {
			if p.Kind != profiles.KindSynthetic {
				out = append(out, p)
			}
		}
		return out, err
	}
	var errs []error
	for _, a := range args {
		switch a {
		case "none":
			continue
		case "all":
			all, err := profiles.All()
			if err != nil {
				errs = append(errs, err)
			}
			out = append(out, all...)
		default:
			p, err := profiles.Load(a)
			if err != nil {
				errs = append(errs, fmt.Errorf("--profile: %w", err))
				continue
			}
			out = append(out, p)
		}
	}
	return out, errors.Join(errs...)
}

func parseInts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("%q is not a positive whole number", f)
		}
		out = append(out, n)
	}
	return out, nil
}

func joinInts(ns []int) string {
	s := make([]string, len(ns))
	for i, n := range ns {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, ",")
}
