package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"

	"fieldgate/devices/profiles"
)

func init() {
	commands["profiles"] = command{
		summary: "list the embedded device profiles, or print one's register map (devsim profiles [NAME])",
		run:     runProfiles,
	}
}

func runProfiles(_ context.Context, args []string, stdout, _ io.Writer) error {
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	switch len(args) {
	case 0:
		fmt.Fprintln(tw, "NAME\tVENDOR\tMODEL\tTAGS\tDATASHEET")
		for _, n := range profiles.Names() {
			p, err := profiles.Lookup(n)
			if err != nil {
				return err
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\n", p.Name, p.Vendor, p.Model, len(p.Tags), p.Datasheet)
		}
	case 1:
		p, err := profiles.Lookup(args[0])
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s: %s %s\n%s\ndatasheet: %s\n\n", p.Name, p.Vendor, p.Model, p.Description, p.Datasheet)
		fmt.Fprintln(tw, "TAG\tTABLE\tADDRESS\tTYPE\tORDER\tSCALE\tOFFSET\tBIT\tLENGTH\tUNIT")
		for _, t := range p.Tags {
			opt := func(ok bool, s string) string {
				if !ok {
					return "-"
				}
				return s
			}
			order := opt(t.Width() >= 2 && t.Type != "string", t.Order())
			scale := opt(t.Scale != nil, strconv.FormatFloat(t.ScaleOr1(), 'g', -1, 64))
			offset := opt(t.Offset != 0, strconv.FormatFloat(t.Offset, 'g', -1, 64))
			bit := "-"
			if t.Bit != nil {
				bit = strconv.Itoa(*t.Bit)
			}
			length := opt(t.Type == "string", strconv.Itoa(t.Length))
			fmt.Fprintf(tw, "%s\t%s\t%d (%#04x)\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", t.Name, t.Table, t.Address, t.Address,
				t.Type, order, scale, offset, bit, length, opt(t.Unit != "", t.Unit))
		}
	default:
		return fmt.Errorf("%w: devsim profiles takes at most one profile name", errUsage)
	}
	return tw.Flush()
}
