package opcua

import (
	"fmt"
	"time"

	"fieldgate/collectors/configfile"
	"fieldgate/collectors/rbe"
	"fieldgate/collectors/reading"
)

// DeviceReport is an entry of `devices:`: the report by exception of every
// node of the device that does not set its own.
type DeviceReport struct {
	Pos       configfile.Pos      `yaml:"-"`
	Name      string              `yaml:"name"`
	Publish   string              `yaml:"publish"`
	Deadband  *Deadband           `yaml:"deadband"`
	Heartbeat configfile.Duration `yaml:"heartbeat"`
}

// normalize turns the {absolute: x} / {percent: p} form into type and
// value, reporting a mix of the two forms. It reports whether the result
// is worth checking further.
func (d *Deadband) normalize(errs *configfile.Errors, where string) bool {
	short := d.Absolute != nil || d.Percent != nil
	switch {
	case short && (d.Type != "" || d.Value != 0):
		errs.Add(d.Pos, "%s: deadband: write {type: absolute|percent, value: x} or {absolute: x} / {percent: p}, not both forms", where)
		return false
	case d.Absolute != nil && d.Percent != nil:
		errs.Add(d.Pos, "%s: deadband takes absolute or percent, not both", where)
		return false
	case d.Absolute != nil:
		d.Type, d.Value = DeadbandAbsolute, *d.Absolute
	case d.Percent != nil:
		d.Type, d.Value = DeadbandPercent, *d.Percent
	}
	return true
}

// policy is d as a report-by-exception deadband.
func (d *Deadband) policy() *rbe.Deadband {
	if d == nil {
		return nil
	}
	v := d.Value
	if d.Type == DeadbandPercent {
		return &rbe.Deadband{Percent: &v, Pos: d.Pos}
	}
	return &rbe.Deadband{Absolute: &v, Pos: d.Pos}
}

func (d DeviceReport) policy() rbe.Policy {
	return rbe.Policy{Publish: d.Publish, Deadband: d.Deadband.policy(), Heartbeat: d.Heartbeat}
}

func (n *Node) policy() rbe.Policy {
	return rbe.Policy{Publish: n.Publish, Deadband: n.Deadband.policy(), Heartbeat: n.Heartbeat}
}

// validateReport checks `devices:` and the nodes' publish, heartbeat,
// writable, min and max. In subscribe mode the server reports changes (and
// applies the deadband), so publish: always is refused there; in poll mode
// the collector applies publish, deadband and heartbeat itself.
func (c *Config) validateReport(errs *configfile.Errors) {
	subscribe := c.Mode == "" || c.Mode == ModeSubscribe
	devices := map[string]bool{}
	for _, n := range c.Nodes {
		devices[n.Device] = true
	}
	byName := map[string]DeviceReport{}
	for i := range c.Devices {
		d := &c.Devices[i]
		switch {
		case d.Name == "":
			errs.Add(d.Pos, "devices[%d]: name: missing", i)
			continue
		case byName[d.Name].Name != "":
			errs.Add(d.Pos, "devices[%d]: duplicate device %q", i, d.Name)
			continue
		case !devices[d.Name]:
			errs.Add(d.Pos, "devices[%d]: device %q has no nodes", i, d.Name)
		}
		if d.Deadband != nil {
			d.Deadband.normalize(errs, fmt.Sprintf("devices[%d]", i))
		}
		pol := d.policy()
		if subscribe && pol.Publish == "" {
			pol.Publish = rbe.PublishOnChange
		}
		for _, p := range pol.Problems(nil, nil, true) {
			if subscribe && p.Key == "deadband" {
				continue // the server applies it
			}
			errs.Add(d.Pos, "devices[%d] (%s): %s", i, d.Name, p.Msg)
		}
		if subscribe && d.Publish == rbe.PublishAlways {
			errs.Add(d.Pos, "devices[%d] (%s): publish: always needs mode: poll (a subscription reports changes only)", i, d.Name)
		}
		byName[d.Name] = *d
	}
	for i := range c.Nodes {
		n := &c.Nodes[i]
		for _, p := range n.Limits.Problems(reading.TypeUnknown) {
			errs.Add(n.Pos, "nodes[%d]: %s", i, p.Msg)
		}
		if subscribe {
			if n.Publish == rbe.PublishAlways {
				errs.Add(n.Pos, "nodes[%d]: publish: always needs mode: poll (a subscription reports changes only)", i)
			}
			pol := rbe.Policy{Publish: rbe.PublishOnChange, Heartbeat: n.Heartbeat}
			for _, p := range pol.Problems(nil, nil, false) {
				errs.Add(n.Pos, "nodes[%d]: %s", i, p.Msg)
			}
			continue
		}
		// A deadband without publish: on_change does nothing in poll mode,
		// as it always did.
		own, def := n.policy(), byName[n.Device].policy()
		if own.Merge(def).Publish != rbe.PublishOnChange {
			own.Deadband, def.Deadband = nil, nil
		}
		for _, p := range own.TagProblems(def, n.Limits.Min, n.Limits.Max, true) {
			errs.Add(n.Pos, "nodes[%d]: %s", i, p.Msg)
		}
	}
}

// Schema describes the devices and their tags (types come from the server).
func (c Config) Schema() []reading.Device {
	var out []reading.Device
	at := map[string]int{}
	for _, n := range c.Nodes {
		i, ok := at[n.Device]
		if !ok {
			i = len(out)
			at[n.Device] = i
			out = append(out, reading.Device{Name: n.Device})
		}
		out[i].Tags = append(out[i].Tags, reading.Tag{Name: n.Name, Unit: n.Unit,
			Writable: n.Limits.Writable, Min: n.Limits.Min, Max: n.Limits.Max})
	}
	return out
}

// rules resolves every node's report by exception: in poll mode its own
// keys, then its device's; in subscribe mode only heartbeats (the server
// reports changes and applies deadbands).
func (c Config) rules() map[string]map[string]rbe.Rule {
	subscribe := c.Mode == "" || c.Mode == ModeSubscribe
	dev := map[string]rbe.Policy{}
	for _, d := range c.Devices {
		dev[d.Name] = d.policy()
	}
	out := map[string]map[string]rbe.Rule{}
	for i := range c.Nodes {
		n := &c.Nodes[i]
		pol := n.policy().Merge(dev[n.Device])
		var r rbe.Rule
		switch {
		case subscribe && pol.Heartbeat > 0:
			r = rbe.Rule{OnChange: true, Heartbeat: time.Duration(pol.Heartbeat)}
		case subscribe:
			continue
		default:
			r = pol.Rule(n.Limits.Min, n.Limits.Max)
		}
		if out[n.Device] == nil {
			out[n.Device] = map[string]rbe.Rule{}
		}
		out[n.Device][n.Name] = r
	}
	return out
}
