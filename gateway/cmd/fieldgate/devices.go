package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strings"

	"fieldgate/gateway/serialports"
)

// cmdDevices lists the machine's serial ports and the collectors of
// gateway.yaml that own them.
func cmdDevices(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("devices", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", defaultConfigPath, "gateway config `FILE` whose collectors' devices and modbus serial ports are shown as owners")
	asJSON := fs.Bool("json", false, "print the ports as JSON")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usageError("devices: unexpected argument %q", pos[0])
	}
	explicit := false
	fs.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "config" })
	return listDevices(serialports.Lister{}, *path, explicit, *asJSON, stdout, stderr)
}

func listDevices(l serialports.Lister, path string, explicit, asJSON bool, stdout, stderr io.Writer) error {
	ports, err := l.List()
	if err != nil {
		return err
	}
	cfg, err := loadForView(path, explicit, stderr)
	if err != nil {
		return err
	}
	if cfg != nil {
		ports = serialports.Attach(ports, serialports.ClaimsOf(cfg))
	}
	if asJSON {
		if ports == nil {
			ports = []serialports.Port{}
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(ports)
	}
	printPorts(stdout, ports)
	return nil
}

// printPorts writes one block per port: the node, what it is and who owns
// it, then its udev names and the configured names that lead to it.
func printPorts(w io.Writer, ports []serialports.Port) {
	if len(ports) == 0 {
		fmt.Fprintln(w, "no serial ports (no USB serial adapter plugged in, no UART, and none configured)")
		return
	}
	for i, p := range ports {
		if i > 0 {
			fmt.Fprintln(w)
		}
		what := []string{}
		if p.Missing {
			what = append(what, "MISSING: no such device on this machine")
		}
		if u := p.USB; u != nil {
			desc := strings.TrimSpace(u.Manufacturer + " " + u.Product)
			if desc == "" {
				desc = "USB"
			}
			desc += fmt.Sprintf(" (USB %s:%s", u.VID, u.PID)
			if u.Serial != "" {
				desc += ", serial " + u.Serial
			}
			what = append(what, desc+")")
		}
		if p.Driver != "" {
			what = append(what, "driver "+p.Driver)
		}
		owner := "owner: none"
		if o := p.Owners(); len(o) > 0 {
			owner = "owner: " + strings.Join(o, ", ")
		}
		fmt.Fprintf(w, "%s  %s\n", p.Path, strings.Join(append(what, owner), " · "))
		for _, l := range p.ByID {
			fmt.Fprintf(w, "  by-id    %s\n", l)
		}
		for _, l := range p.ByPath {
			fmt.Fprintf(w, "  by-path  %s\n", l)
		}
		for _, c := range p.Claims {
			if c.Path != p.Path {
				fmt.Fprintf(w, "  config   %s (%s %s)\n", c.Path, c.Collector, c.Key)
			}
		}
	}
}
