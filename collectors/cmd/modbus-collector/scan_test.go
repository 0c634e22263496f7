package main

import (
	"context"
	"errors"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"fieldgate/devices/devsim"
	"fieldgate/devices/profiles"
)

// TestBinaryScan runs `modbus-collector scan` against devsim over Modbus
// TCP: the units that answer are listed, each with its best-matching
// profile first; a scan that finds nothing exits 1; a bad flag exits 2.
func TestBinaryScan(t *testing.T) {
	bin := buildBinary(t)
	var units []devsim.Unit
	for id, name := range map[uint8]string{4: "carlo-gavazzi-em24", 5: "eurotherm-3200"} {
		p, err := profiles.Lookup(name)
		if err != nil {
			t.Fatal(err)
		}
		units = append(units, devsim.Unit{ID: id, Profile: p})
	}
	sim, err := devsim.NewModbus(devsim.Config{TCP: "127.0.0.1:0", Units: units})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sim.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	if err := sim.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}

	out, err := exec.Command(bin, "scan", "--tcp", sim.Addr(), "--units", "1-6", "--timeout", "300ms").CombinedOutput()
	if err != nil {
		t.Fatalf("scan: %v\n%s", err, out)
	}
	for _, re := range []string{
		`(?m)^scanning tcp 127\.0\.0\.1:\d+: unit ids 1-6 \(timeout 300ms, at most 2s\)$`,
		`(?m)^unit 4 answers \(modbus exception 2: illegal data address\)$`,
		`(?m)^unit 5 answers \(modbus exception 2: illegal data address\)$`,
		`(?m)^2 unit\(s\) found, 6 probes in `,
		`(?m)^unit 4:\n\s+PROFILE\s+READABLE\s+PLAUSIBLE\s+SAMPLE\n\s+carlo-gavazzi-em24\s+38/38\s+38/38\s+voltage_l1_n=\d+(\.\d)? V`,
		`(?m)^unit 5:\n\s+PROFILE\s+READABLE\s+PLAUSIBLE\s+SAMPLE\n\s+eurotherm-3200\s+18/18\s+18/18\s+process_value=`,
	} {
		if !regexp.MustCompile(re).Match(out) {
			t.Errorf("output does not match %s:\n%s", re, out)
		}
	}
	if strings.Contains(string(out), "unit 1 answers") || strings.Contains(string(out), "fieldgate-bench") {
		t.Errorf("an absent unit or a synthetic profile is listed:\n%s", out)
	}

	out, err = exec.Command(bin, "scan", "--tcp", sim.Addr(), "--units", "7-8", "--profile", "none").CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(string(out), "no unit answered") {
		t.Errorf("empty scan: %v\n%s", err, out)
	}
	for _, args := range [][]string{
		{"scan"},
		{"scan", "--tcp", sim.Addr(), "--units", "9-3"},
		{"scan", "--port", "/dev/ttyUSB0", "--parity", "X"},
		{"scan", "--tcp", sim.Addr(), "--profile", "eastron-sdm999"},
	} {
		out, err := exec.Command(bin, args...).CombinedOutput()
		if !errors.As(err, &ee) || ee.ExitCode() != 2 {
			t.Errorf("%q: %v (want exit 2)\n%s", args, err, out)
		}
	}
}
