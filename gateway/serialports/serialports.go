// Package serialports lists a gateway's serial ports for `fieldgate
// devices`: each port's device node, its udev names under /dev/serial/by-id
// and /dev/serial/by-path, its USB vendor, product and serial number, and the
// collectors of gateway.yaml that claim it.
//
// It reads sysfs and /dev only — it never opens a port. go.bug.st/serial's
// enumerator (which the collectors' serial code comes from) tells a real
// ttyS UART from a placeholder by opening it and setting it to raw 9600 baud,
// which reconfigures a line a collector is using (bugst/go-serial#210); the
// kernel states the same fact, read-only, in /sys/class/tty/ttyS*/type. The
// USB attributes are read from sysfs the way the enumerator reads them.
package serialports

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"fieldgate/collectors/modbus"
	"fieldgate/gateway/config"
)

// Defaults of Lister.
const (
	DefaultSysDir = "/sys"
	DefaultDevDir = "/dev"
)

// Port is one serial port.
type Port struct {
	// Path is the device node, e.g. /dev/ttyUSB0 (a pty: /dev/pts/3).
	Path string `json:"path"`
	// ByID and ByPath are the udev links to it under /dev/serial.
	ByID   []string `json:"by_id,omitempty"`
	ByPath []string `json:"by_path,omitempty"`
	// Driver is the kernel driver (ftdi_sio, cp210x, cdc_acm, serial8250…).
	Driver string `json:"driver,omitempty"`
	// USB is set for a USB adapter.
	USB *USB `json:"usb,omitempty"`
	// Claims are the gateway.yaml entries that resolve to this port.
	Claims []Claim `json:"claims,omitempty"`
	// Missing is set for a claimed path that resolves to no device on this
	// machine (an unplugged adapter); Path is then the path as configured.
	Missing bool `json:"missing,omitempty"`
}

// USB is a USB adapter's identity, as the kernel read it from the device.
type USB struct {
	VID          string `json:"vid"`
	PID          string `json:"pid"`
	Manufacturer string `json:"manufacturer,omitempty"`
	Product      string `json:"product,omitempty"`
	Serial       string `json:"serial,omitempty"`
}

// Claim is a collector's use of a path: an entry of its `devices`, or its
// modbus serial.port.
type Claim struct {
	Collector string `json:"collector"`
	// Path is the host path as written (or mapped back from the container
	// path of serial.port).
	Path string `json:"path"`
	// Key says where: "devices" or "modbus.serial.port".
	Key string `json:"key"`
}

// Owners are the distinct collectors of the port's claims.
func (p Port) Owners() []string {
	var out []string
	for _, c := range p.Claims {
		if !slices.Contains(out, c.Collector) {
			out = append(out, c.Collector)
		}
	}
	return out
}

// Lister reads the ports of a machine. The zero value reads /sys and /dev;
// tests point it at a tree of their own.
type Lister struct {
	SysDir, DevDir string
}

func (l Lister) sys() string { return orDefault(l.SysDir, DefaultSysDir) }
func (l Lister) dev() string { return orDefault(l.DevDir, DefaultDevDir) }

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// maxAttr bounds what is read of one sysfs attribute.
const maxAttr = 4096

// List returns the machine's serial ports by path: every tty the kernel
// ties to a hardware device, except ttyS placeholders without a UART. A
// machine without USB adapters or UARTs has none.
func (l Lister) List() ([]Port, error) {
	classDir := filepath.Join(l.sys(), "class", "tty")
	entries, err := os.ReadDir(classDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("serial ports: %w", err)
	}
	links := l.udevLinks()
	var ports []Port
	for _, e := range entries {
		name := e.Name()
		ttyDir := filepath.Join(classDir, name)
		device, err := filepath.EvalSymlinks(filepath.Join(ttyDir, "device"))
		if err != nil {
			continue // virtual consoles, ptmx, console: no hardware behind them
		}
		// A ttyS with no UART behind it reports type 0 (PORT_UNKNOWN).
		if t, err := readAttr(filepath.Join(ttyDir, "type")); err == nil && t == "0" {
			continue
		}
		p := Port{Path: filepath.Join(l.dev(), name)}
		p.Driver = driverOf(device, l.sys())
		p.USB = usbOf(device, l.sys())
		p.ByID = links[name]["by-id"]
		p.ByPath = links[name]["by-path"]
		ports = append(ports, p)
	}
	slices.SortFunc(ports, func(a, b Port) int { return strings.Compare(a.Path, b.Path) })
	return ports, nil
}

// udevLinks maps a tty name to its links under dev/serial/{by-id,by-path}.
func (l Lister) udevLinks() map[string]map[string][]string {
	out := map[string]map[string][]string{}
	for _, kind := range []string{"by-id", "by-path"} {
		dir := filepath.Join(l.dev(), "serial", kind)
		entries, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, e := range entries {
			link := filepath.Join(dir, e.Name())
			target, err := os.Readlink(link)
			if err != nil {
				continue
			}
			name := filepath.Base(target)
			if out[name] == nil {
				out[name] = map[string][]string{}
			}
			out[name][kind] = append(out[name][kind], link)
		}
	}
	return out
}

// usbOf walks up from a tty's device directory to the USB device that holds
// it (the directory with idVendor), if any, within sysDir.
func usbOf(device, sysDir string) *USB {
	root, err := filepath.EvalSymlinks(sysDir)
	if err != nil {
		root = sysDir
	}
	for dir := device; strings.HasPrefix(dir, root+string(filepath.Separator)); dir = filepath.Dir(dir) {
		vid, err := readAttr(filepath.Join(dir, "idVendor"))
		if err != nil {
			continue
		}
		u := &USB{VID: strings.ToUpper(vid)}
		pid, _ := readAttr(filepath.Join(dir, "idProduct"))
		u.PID = strings.ToUpper(pid)
		u.Manufacturer, _ = readAttr(filepath.Join(dir, "manufacturer"))
		u.Product, _ = readAttr(filepath.Join(dir, "product"))
		u.Serial, _ = readAttr(filepath.Join(dir, "serial"))
		return u
	}
	return nil
}

// driverOf names the driver of a tty's device. Since Linux 6.3 a UART's
// device is a port of the serial-base bus whose drivers ("port", "ctrl")
// say nothing: the hardware's driver (serial8250, …) is further up.
func driverOf(device, sysDir string) string {
	root, err := filepath.EvalSymlinks(sysDir)
	if err != nil {
		root = sysDir
	}
	for dir := device; strings.HasPrefix(dir, root+string(filepath.Separator)); dir = filepath.Dir(dir) {
		drv, err := filepath.EvalSymlinks(filepath.Join(dir, "driver"))
		if err != nil {
			continue
		}
		if bus := filepath.Base(filepath.Dir(filepath.Dir(drv))); bus == "serial-base" {
			continue
		}
		return filepath.Base(drv)
	}
	return ""
}

// readAttr reads the first line of a sysfs attribute, bounded.
func readAttr(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	line, err := bufio.NewReader(io.LimitReader(f, maxAttr)).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", err
	}
	return strings.TrimSpace(line), nil
}

// Attach adds the claims to the ports they resolve to (through symlinks:
// /dev/serial/by-id/…, a socat pty link). A claim that resolves to a
// character device not listed (a pseudo-terminal) adds that device as a
// port; one that resolves to nothing adds a Missing port under its path.
func Attach(ports []Port, claims []Claim) []Port {
	index := map[string]int{}
	for i, p := range ports {
		index[realPath(p.Path)] = i
	}
	for _, c := range claims {
		real, err := filepath.EvalSymlinks(c.Path)
		key, missing := real, false
		if err != nil {
			key, missing = c.Path, true
		}
		i, ok := index[key]
		if !ok {
			p := Port{Path: key, Missing: missing}
			if !missing && !isCharDevice(real) {
				continue // not a device: validate reports it, nothing to list
			}
			ports = append(ports, p)
			i = len(ports) - 1
			index[key] = i
		}
		ports[i].Claims = append(ports[i].Claims, c)
	}
	return ports
}

func realPath(p string) string {
	if r, err := filepath.EvalSymlinks(p); err == nil {
		return r
	}
	return p
}

func isCharDevice(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode()&fs.ModeCharDevice != 0
}

// ClaimsOf lists what the collectors of cfg claim: every `devices` host path,
// and the modbus serial.port, mapped back to its host path through
// `devices` (a privileged collector may name the host path directly).
func ClaimsOf(cfg *config.Config) []Claim {
	var out []Claim
	for _, c := range cfg.Collectors {
		devs := c.ParsedDevices()
		for _, d := range devs {
			out = append(out, Claim{Collector: c.Name, Path: d.Host, Key: "devices"})
		}
		if c.Protocol != config.ProtocolModbus || len(c.ProtocolConfig) == 0 {
			continue
		}
		mc, err := modbus.ParseConfig(cfg.Path, c.ProtocolConfig)
		if err != nil || mc.Serial.Port == "" {
			continue
		}
		host := mc.Serial.Port
		for _, d := range devs {
			if d.Container == mc.Serial.Port {
				host = d.Host
			}
		}
		out = append(out, Claim{Collector: c.Name, Path: host, Key: "modbus.serial.port"})
	}
	return out
}
