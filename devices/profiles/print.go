package profiles

import (
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
)

// WriteList prints one line per profile — name, vendor, model, kind, tag
// count and source document — under a header, as `fieldgate profiles` and
// `devsim profiles` show them.
func WriteList(w io.Writer, ps []*Profile) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tMAKER\tMODEL\tKIND\tTAGS\tSOURCE")
	for _, p := range ps {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\n", p.Name, p.Vendor, p.Model, orDash(p.Kind), len(p.Tags), orDash(p.Source()))
	}
	return tw.Flush()
}

// WriteTags prints the profile's identity and register map: one line per
// tag with table, address (decimal and hex, 0-based as on the wire), type,
// byte order, scale, offset, bit, string length and unit; "-" where a column
// does not apply.
func (p *Profile) WriteTags(w io.Writer) error {
	fmt.Fprintf(w, "%s: %s %s (%s)\n", p.Name, p.Vendor, p.Model, orDash(p.Kind))
	if p.Description != "" {
		fmt.Fprintln(w, p.Description)
	}
	fmt.Fprintf(w, "source: %s\n\n", orDash(p.Source()))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TAG\tTABLE\tADDRESS\tTYPE\tORDER\tSCALE\tOFFSET\tBIT\tLENGTH\tUNIT")
	for i := range p.Tags {
		t := &p.Tags[i]
		opt := func(ok bool, s string) string {
			if !ok {
				return "-"
			}
			return s
		}
		bit := "-"
		if t.Bit != nil {
			bit = strconv.Itoa(*t.Bit)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d (%#04x)\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", t.Name, t.Table, t.Address, t.Address, t.Type,
			opt(t.Width() >= 2 && t.Type != "string", t.Order()),
			opt(t.Scale != nil, strconv.FormatFloat(t.ScaleOr1(), 'g', -1, 64)),
			opt(t.Offset != 0, strconv.FormatFloat(t.Offset, 'g', -1, 64)),
			bit,
			opt(t.Type == "string", strconv.Itoa(t.Length)),
			orDash(t.Unit))
	}
	return tw.Flush()
}

// All returns every embedded profile, sorted by name.
func All() ([]*Profile, error) {
	var ps []*Profile
	for _, n := range Names() {
		p, err := Lookup(n)
		if err != nil {
			return nil, err
		}
		ps = append(ps, p)
	}
	return ps, nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
