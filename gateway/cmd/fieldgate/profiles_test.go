package main

import (
	"bytes"
	"context"
	"io"
	"regexp"
	"strings"
	"testing"

	"fieldgate/devices/profiles"
)

// TestProfilesList: every embedded profile is one row with its maker,
// model, kind and source document.
func TestProfilesList(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), []string{"profiles"}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if !regexp.MustCompile(`^NAME\s+MAKER\s+MODEL\s+KIND\s+TAGS\s+SOURCE$`).MatchString(lines[0]) {
		t.Errorf("header %q", lines[0])
	}
	names := profiles.Names()
	if len(lines) != len(names)+1 {
		t.Fatalf("%d rows for %d profiles:\n%s", len(lines)-1, len(names), out.String())
	}
	for i, name := range names {
		p, _ := profiles.Lookup(name)
		row := lines[i+1]
		for _, want := range []string{p.Name, p.Vendor, p.Model, p.Kind, p.Revision} {
			if !strings.Contains(row, want) {
				t.Errorf("row %q lacks %q", row, want)
			}
		}
	}
	if !strings.Contains(out.String(), "DOCA0005EN-04") {
		t.Errorf("Schneider's document revision not listed:\n%s", out.String())
	}
}

func TestProfilesShow(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), []string{"profiles", "show", "abb-b23"}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	for _, re := range []string{
		`(?m)^abb-b23: ABB B23 / B24 \(energy_meter\)$`,
		`(?m)^source: B23/B24 User Manual .*2CMC485003M0201.*Revision A`,
		`(?m)^active_power_total\s+holding_register\s+23316 \(0x5b14\)\s+int32\s+ABCD\s+0\.01\s+-\s+-\s+-\s+W$`,
		`(?m)^frequency\s+holding_register\s+23340 \(0x5b2c\)\s+uint16\s+-\s+0\.01\s+-\s+-\s+-\s+Hz$`,
	} {
		if !regexp.MustCompile(re).MatchString(out.String()) {
			t.Errorf("output does not match %s:\n%s", re, out.String())
		}
	}
}

func TestProfilesUsage(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"profiles", "show", "nope"}, `unknown profile "nope" (valid: abb-b23,`},
		{[]string{"profiles", "show"}, "takes one profile name"},
		{[]string{"profiles", "list"}, `unknown argument "list" (valid: show NAME)`},
	}
	for _, tc := range tests {
		err := run(context.Background(), tc.args, io.Discard, io.Discard)
		if exitCode(err) != 2 || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("fieldgate %q = %v (exit %d), want exit 2 and %q", tc.args, err, exitCode(err), tc.want)
		}
	}
}
