// Package opcuasim is an OPC UA server (gopcua's server package) that serves
// simulated devices for demos, the lab bench and benchmarks: each device is a
// profile from devices/profiles whose tags become variables with changing
// values, plus an optional bulk set of Double variables for load tests.
//
// Node ids, in the simulator's namespace (index 1):
//
//	ns=1;s=<device>.<tag>   a profile tag, typed as the profile says
//	ns=1;s=Bulk.<n>         bulk variable n (0 ≤ n < Vars), Double, n + seconds since start
//
// The server offers security None with anonymous users only (gopcua's server
// implements no other policy yet), so clients must set
// `security: {policy: None, mode: None}`.
package opcuasim

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/gopcua/opcua/id"
	"github.com/gopcua/opcua/server"
	"github.com/gopcua/opcua/server/attrs"
	"github.com/gopcua/opcua/ua"

	"fieldgate/devices/profiles"
)

// Device is one simulated device: a name and the profile whose tags it serves.
type Device struct {
	Name    string
	Profile string
}

// Config configures the simulator.
type Config struct {
	// Host to listen on; default 127.0.0.1.
	Host string
	// Port to listen on; default 4840. 0 is not allowed (the endpoint URL
	// must be known before listening).
	Port int
	// Advertise are more host names clients may use in the endpoint URL
	// (opc.tcp://NAME:Port), such as a container's service name when Host
	// is 0.0.0.0: the server answers GetEndpoints and CreateSession only
	// for the URLs it advertises, the one on Host included.
	Advertise []string
	// Devices to serve; default meter1 (eastron-sdm630) and drive1
	// (fieldgate-demo-drive).
	Devices []Device
	// Vars is the number of bulk variables (default 0).
	Vars int
	// Interval is how often values change; default 1s.
	Interval time.Duration
	// Log receives the server's messages; default discard.
	Log *slog.Logger
}

// DefaultDevices are served when Config.Devices is empty.
var DefaultDevices = []Device{{Name: "meter1", Profile: "eastron-sdm630"}, {Name: "drive1", Profile: "fieldgate-demo-drive"}}

// Namespace is the simulator's namespace URI.
const Namespace = "urn:fieldgate:devsim"

// Sim is a configured simulator.
type Sim struct {
	cfg    Config
	srv    *server.Server
	notify notifier // srv, but for tests
	ns     *server.NodeNameSpace
	vars   []*variable
	start  time.Time
	// stopTimeout bounds Run's return once its context is done.
	stopTimeout time.Duration
}

// notifier is what the value updates need of the server.
type notifier interface {
	ChangeNotification(n *ua.NodeID)
}

// DefaultStopTimeout bounds how long Run waits, once its context is done,
// for the value updates to stop and the server to close.
const DefaultStopTimeout = 5 * time.Second

// variable is one served node and how its value is computed.
type variable struct {
	node  *server.Node
	id    *ua.NodeID
	value func(at time.Time) any
	dv    atomic.Pointer[ua.DataValue] // current value, replaced (never mutated) each tick
}

// New validates cfg and builds the address space.
func New(cfg Config) (*Sim, error) {
	if cfg.Host == "" {
		cfg.Host = "127.0.0.1"
	}
	if cfg.Port == 0 {
		cfg.Port = 4840
	}
	if cfg.Port < 0 || cfg.Port > 65535 {
		return nil, fmt.Errorf("opcuasim: invalid port %d", cfg.Port)
	}
	for _, h := range cfg.Advertise {
		if h == "" || strings.ContainsAny(h, ":/ ") {
			return nil, fmt.Errorf("opcuasim: invalid advertised host %q (a host name or IPv4 address)", h)
		}
	}
	if len(cfg.Devices) == 0 {
		cfg.Devices = DefaultDevices
	}
	if cfg.Interval == 0 {
		cfg.Interval = time.Second
	}
	if cfg.Interval < 10*time.Millisecond {
		return nil, fmt.Errorf("opcuasim: interval %s is below 10ms", cfg.Interval)
	}
	if cfg.Vars < 0 {
		return nil, fmt.Errorf("opcuasim: vars must not be negative, got %d", cfg.Vars)
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	type profiled struct {
		name string
		p    *profiles.Profile
	}
	var devs []profiled
	seen := map[string]bool{}
	for _, d := range cfg.Devices {
		if d.Name == "" {
			return nil, errors.New("opcuasim: device without a name")
		}
		if seen[d.Name] {
			return nil, fmt.Errorf("opcuasim: duplicate device %q", d.Name)
		}
		seen[d.Name] = true
		p, err := profiles.Lookup(d.Profile)
		if err != nil {
			return nil, fmt.Errorf("opcuasim: device %q: %w", d.Name, err)
		}
		devs = append(devs, profiled{d.Name, p})
	}

	// gopcua logs its own standard nodeset's duplicate reference types as
	// errors while it builds the server; keep that noise out.
	quiet := &slogAdapter{l: cfg.Log}
	quiet.quiet.Store(true)
	defer quiet.quiet.Store(false)
	// The first endpoint is the one the server listens on.
	eps := []server.Option{server.EndPoint(cfg.Host, cfg.Port)}
	for _, h := range cfg.Advertise {
		eps = append(eps, server.EndPoint(h, cfg.Port))
	}
	srv := server.New(append(eps,
		server.EnableSecurity("None", ua.MessageSecurityModeNone),
		server.EnableAuthMode(ua.UserTokenTypeAnonymous),
		server.ServerName("fieldgate devsim"),
		server.ProductName("fieldgate devsim opcua"),
		server.ManufacturerName("fieldgate"),
		server.SetLogger(quiet),
	)...)
	s := &Sim{cfg: cfg, srv: srv, notify: srv, start: time.Now(), stopTimeout: DefaultStopTimeout}
	s.ns = server.NewNodeNameSpace(srv, Namespace)
	root, _ := srv.Namespace(0)
	objects := s.ns.Objects()
	root.Objects().AddRef(objects, id.HasComponent, true)

	for _, d := range devs {
		folder := s.folder(d.name)
		objects.AddRef(folder, id.Organizes, true)
		for i := range d.p.Tags {
			t := &d.p.Tags[i]
			typ := t.Type
			if t.Scale != nil || t.Offset != 0 {
				// A scaled register is an engineering value, not an
				// integer: an OPC UA server publishes it as a Double.
				typ = "float64"
			}
			conv, dt := converter(typ)
			s.add(folder, d.name+"."+t.Name, dt, func(at time.Time) any { return conv(t.SimValue(at)) })
		}
	}
	if cfg.Vars > 0 {
		folder := s.folder("Bulk")
		objects.AddRef(folder, id.Organizes, true)
		for i := 0; i < cfg.Vars; i++ {
			base := float64(i)
			s.add(folder, "Bulk."+strconv.Itoa(i), id.Double, func(at time.Time) any {
				return base + math.Floor(at.Sub(s.start).Seconds())
			})
		}
	}
	return s, nil
}

// folder adds an object node ns=1;s=<name> (gopcua v0.8.0's NewFolderNode
// panics on its own Description attribute).
func (s *Sim) folder(name string) *server.Node {
	n := server.NewNode(ua.NewStringNodeID(s.ns.ID(), name), map[ua.AttributeID]*ua.DataValue{
		ua.AttributeIDNodeClass:     server.DataValueFromValue(uint32(ua.NodeClassObject)),
		ua.AttributeIDBrowseName:    server.DataValueFromValue(attrs.BrowseName(name)),
		ua.AttributeIDDisplayName:   server.DataValueFromValue(attrs.DisplayName(name, name)),
		ua.AttributeIDEventNotifier: server.DataValueFromValue(byte(0)),
	}, nil, nil)
	return s.ns.AddNode(n)
}

func (s *Sim) add(parent *server.Node, name string, dataType uint32, value func(time.Time) any) {
	v := &variable{id: ua.NewStringNodeID(s.ns.ID(), name), value: value}
	v.dv.Store(dataValue(value(time.Now()), time.Now()))
	v.node = server.NewVariableNode(v.id, name, func() *ua.DataValue { return v.dv.Load() })
	_ = v.node.SetAttribute(ua.AttributeIDDataType, &ua.DataValue{EncodingMask: ua.DataValueValue,
		Value: ua.MustVariant(ua.NewNumericExpandedNodeID(0, dataType))}) // gopcua's server keeps data types as expanded ids
	s.ns.AddNode(v.node)
	parent.AddRef(v.node, id.HasComponent, true)
	s.vars = append(s.vars, v)
}

func dataValue(v any, at time.Time) *ua.DataValue {
	return &ua.DataValue{
		EncodingMask:    ua.DataValueValue | ua.DataValueSourceTimestamp | ua.DataValueServerTimestamp,
		Value:           ua.MustVariant(v),
		SourceTimestamp: at,
		ServerTimestamp: at,
	}
}

// converter quantises a profile's simulated value (float64, bool or string)
// to the tag's type and names the OPC UA data type.
func converter(typ string) (func(any) any, uint32) {
	num := func(v any) float64 {
		f, _ := v.(float64)
		return f
	}
	switch typ {
	case "bool":
		return func(v any) any { b, _ := v.(bool); return b }, id.Boolean
	case "string":
		return func(v any) any { s, _ := v.(string); return s }, id.String
	case "int16":
		return func(v any) any { return int16(math.Round(num(v))) }, id.Int16
	case "uint16":
		return func(v any) any { return uint16(math.Round(num(v))) }, id.UInt16
	case "int32":
		return func(v any) any { return int32(math.Round(num(v))) }, id.Int32
	case "uint32":
		return func(v any) any { return uint32(math.Round(num(v))) }, id.UInt32
	case "int64":
		return func(v any) any { return int64(math.Round(num(v))) }, id.Int64
	case "uint64":
		return func(v any) any { return uint64(math.Round(num(v))) }, id.UInt64
	case "float32":
		return func(v any) any { return float32(num(v)) }, id.Float
	}
	return func(v any) any { return num(v) }, id.Double
}

// Endpoint is the server's URL.
func (s *Sim) Endpoint() string {
	return "opc.tcp://" + net.JoinHostPort(s.cfg.Host, strconv.Itoa(s.cfg.Port))
}

// NodeIDs returns the node ids of the profile tags, "ns=1;s=<device>.<tag>",
// in order.
func (s *Sim) NodeIDs() []string {
	var out []string
	for _, v := range s.vars {
		out = append(out, v.id.String())
	}
	return out
}

// Run serves until ctx is cancelled, changing values every Interval and
// notifying subscribers of the variables whose value changed. It returns at
// most DefaultStopTimeout after ctx ends, even if gopcua's server is stuck.
func (s *Sim) Run(ctx context.Context) error {
	if err := s.srv.Start(ctx); err != nil {
		return fmt.Errorf("opcuasim: start server on %s: %w", s.Endpoint(), err)
	}
	s.cfg.Log.Info("opcua simulator listening", "endpoint", s.Endpoint(), "variables", len(s.vars))
	updated := make(chan struct{})
	go func() {
		defer close(updated)
		s.update(ctx)
	}()
	<-ctx.Done()
	// gopcua's server can block ChangeNotification for good: it sends on a
	// subscription's channel of 100 while holding its lock, and that
	// subscription's goroutine may be stuck sending to a client that does
	// not read. The stop must not wait for that (the update goroutine is then
	// left behind), nor for a Close that hangs.
	sctx, cancel := context.WithTimeout(context.Background(), s.stopTimeout)
	defer cancel()
	select {
	case <-updated:
	case <-sctx.Done():
		s.cfg.Log.Warn("opcua simulator stop: value updates still blocked in the server", "waited", s.stopTimeout)
	}
	closed := make(chan struct{})
	go func() {
		defer close(closed)
		s.srv.Close()
	}()
	select {
	case <-closed:
	case <-sctx.Done():
		s.cfg.Log.Warn("opcua simulator stop: server close did not finish in time", "timeout", s.stopTimeout)
	}
	return nil
}

// update changes the variables every Interval until ctx is done, checking
// ctx between variables so a stop does not wait for a whole sweep.
func (s *Sim) update(ctx context.Context) {
	tk := time.NewTicker(s.cfg.Interval)
	defer tk.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tk.C:
			for _, v := range s.vars {
				if ctx.Err() != nil {
					return
				}
				val := v.value(now)
				if val == v.dv.Load().Value.Value() {
					continue
				}
				v.dv.Store(dataValue(val, now))
				s.notify.ChangeNotification(v.id)
			}
		}
	}
}

// slogAdapter makes a slog.Logger a gopcua server.Logger (printf-style);
// while quiet, everything goes to debug.
type slogAdapter struct {
	l     *slog.Logger
	quiet atomic.Bool
}

func (a *slogAdapter) Debug(msg string, args ...any) { a.l.Debug(fmt.Sprintf(msg, args...)) }
func (a *slogAdapter) Info(msg string, args ...any)  { a.l.Debug(fmt.Sprintf(msg, args...)) }
func (a *slogAdapter) Warn(msg string, args ...any) {
	if a.quiet.Load() {
		a.Debug(msg, args...)
		return
	}
	a.l.Warn(fmt.Sprintf(msg, args...))
}
func (a *slogAdapter) Error(msg string, args ...any) {
	if a.quiet.Load() {
		a.Debug(msg, args...)
		return
	}
	a.l.Error(fmt.Sprintf(msg, args...))
}
