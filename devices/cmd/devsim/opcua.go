package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"fieldgate/devices/devsim/opcuasim"
)

func init() {
	commands["opcua"] = command{
		summary: "OPC UA server (security None) serving profiles as variables ns=1;s=DEVICE.TAG, plus --vars N bulk variables",
		run:     runOPCUA,
	}
}

// deviceList is the repeatable --device NAME=PROFILE flag.
type deviceList []opcuasim.Device

func (d *deviceList) String() string {
	var s []string
	for _, x := range *d {
		s = append(s, x.Name+"="+x.Profile)
	}
	return strings.Join(s, ",")
}

func (d *deviceList) Set(v string) error {
	name, profile, ok := strings.Cut(v, "=")
	if !ok || name == "" || profile == "" {
		return fmt.Errorf("want NAME=PROFILE, got %q", v)
	}
	*d = append(*d, opcuasim.Device{Name: name, Profile: profile})
	return nil
}

func runOPCUA(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("devsim opcua", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var devices deviceList
	host := fs.String("host", "127.0.0.1", "address to listen on")
	port := fs.Int("port", 4840, "TCP port")
	vars := fs.Int("vars", 0, "number of bulk Double variables ns=1;s=Bulk.0 .. Bulk.N-1 (e.g. 10000 for the benchmark)")
	interval := fs.Duration("interval", time.Second, "how often values change")
	level := fs.String("log-level", "info", "debug, info, warn, error")
	list := fs.Bool("list", false, "print the node ids served and exit")
	var advertise []string
	fs.Func("advertise", "another `HOST` clients may use in the endpoint URL, e.g. the service name in a container (repeatable)", func(h string) error {
		advertise = append(advertise, h)
		return nil
	})
	fs.Var(&devices, "device", "NAME=PROFILE, repeatable (default meter1=eastron-sdm630 and drive1=fieldgate-demo-drive)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: devsim opcua [--host H] [--advertise HOST]... [--port P] [--device NAME=PROFILE]... [--vars N] [--interval D]")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return err
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	log, err := newLogger(stderr, *level)
	if err != nil {
		return err
	}
	sim, err := opcuasim.New(opcuasim.Config{Host: *host, Port: *port, Advertise: advertise, Devices: devices, Vars: *vars, Interval: *interval, Log: log})
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if *list {
		for _, id := range sim.NodeIDs() {
			fmt.Fprintln(stdout, id)
		}
		return nil
	}
	fmt.Fprintf(stdout, "ENDPOINT %s\n", sim.Endpoint())
	return sim.Run(ctx)
}
