package serialports

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"fieldgate/gateway/config"
)

// fakeMachine builds a sysfs and /dev tree shaped like the kernel's: an FTDI
// adapter (usb-serial), an Arduino (cdc_acm), an on-board UART, a ttyS
// placeholder without a UART and a virtual console.
func fakeMachine(t *testing.T) (Lister, string) {
	t.Helper()
	root := t.TempDir()
	sys, dev := filepath.Join(root, "sys"), filepath.Join(root, "dev")
	write := func(path, content string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	link := func(target, path string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(target, path); err != nil {
			t.Fatal(err)
		}
	}
	mkdir := func(path string) {
		t.Helper()
		if err := os.MkdirAll(path, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// tty adds a class entry for name whose device is devDir (relative to sys).
	tty := func(name, devDir string, attrs map[string]string) {
		classDir := filepath.Join(sys, devDir, "tty", name)
		mkdir(classDir)
		if devDir != "devices/virtual" {
			link("../..", filepath.Join(classDir, "device"))
		}
		for k, v := range attrs {
			write(filepath.Join(classDir, k), v)
		}
		rel, _ := filepath.Rel(filepath.Join(sys, "class", "tty"), classDir)
		link(rel, filepath.Join(sys, "class", "tty", name))
		write(filepath.Join(dev, name), "") // the node (a plain file here)
	}
	driver := func(devDir, bus, name string) {
		mkdir(filepath.Join(sys, "bus", bus, "drivers", name))
		link(filepath.Join(sys, "bus", bus, "drivers", name), filepath.Join(sys, devDir, "driver"))
	}

	ftdi := "devices/pci0000:00/0000:00:14.0/usb1/1-2"
	for k, v := range map[string]string{"idVendor": "0403\n", "idProduct": "6001\n", "manufacturer": "FTDI\n", "product": "FT232R USB UART\n", "serial": "A50285BI\n"} {
		write(filepath.Join(sys, ftdi, k), v)
	}
	tty("ttyUSB0", ftdi+"/1-2:1.0/ttyUSB0", nil)
	driver(ftdi+"/1-2:1.0/ttyUSB0", "usb-serial", "ftdi_sio")

	acm := "devices/pci0000:00/0000:00:14.0/usb1/1-3"
	for k, v := range map[string]string{"idVendor": "2341\n", "idProduct": "0043\n", "manufacturer": "Arduino (www.arduino.cc)\n", "product": "", "serial": "75833353035351F0F1E1\n"} {
		write(filepath.Join(sys, acm, k), v)
	}
	tty("ttyACM0", acm+"/1-3:1.0", nil)
	driver(acm+"/1-3:1.0", "usb", "cdc_acm")

	// Linux ≥ 6.3: the tty's device is a serial-base port; the UART's
	// driver sits on an ancestor.
	port := "devices/platform/serial8250/serial8250:0/serial8250:0.0"
	tty("ttyS0", port, map[string]string{"type": "4\n"})
	driver(port, "serial-base", "port")
	tty("ttyS1", "devices/platform/serial8250/ttyS1", map[string]string{"type": "0\n"})
	driver("devices/platform/serial8250", "platform", "serial8250")
	tty("tty0", "devices/virtual", nil)

	link("../../ttyUSB0", filepath.Join(dev, "serial", "by-id", "usb-FTDI_FT232R_USB_UART_A50285BI-if00-port0"))
	link("../../ttyUSB0", filepath.Join(dev, "serial", "by-path", "pci-0000:00:14.0-usb-0:2:1.0-port0"))
	link("../../ttyACM0", filepath.Join(dev, "serial", "by-id", "usb-Arduino__www.arduino.cc__0043_75833353035351F0F1E1-if00"))
	return Lister{SysDir: sys, DevDir: dev}, root
}

func TestList(t *testing.T) {
	l, root := fakeMachine(t)
	got, err := l.List()
	if err != nil {
		t.Fatal(err)
	}
	dev := filepath.Join(root, "dev")
	want := []Port{
		{Path: dev + "/ttyACM0", Driver: "cdc_acm",
			ByID: []string{dev + "/serial/by-id/usb-Arduino__www.arduino.cc__0043_75833353035351F0F1E1-if00"},
			USB:  &USB{VID: "2341", PID: "0043", Manufacturer: "Arduino (www.arduino.cc)", Serial: "75833353035351F0F1E1"}},
		{Path: dev + "/ttyS0", Driver: "serial8250"},
		{Path: dev + "/ttyUSB0", Driver: "ftdi_sio",
			ByID:   []string{dev + "/serial/by-id/usb-FTDI_FT232R_USB_UART_A50285BI-if00-port0"},
			ByPath: []string{dev + "/serial/by-path/pci-0000:00:14.0-usb-0:2:1.0-port0"},
			USB:    &USB{VID: "0403", PID: "6001", Manufacturer: "FTDI", Product: "FT232R USB UART", Serial: "A50285BI"}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("List:\n got %s\nwant %s", dump(got), dump(want))
	}
}

func dump(ps []Port) string {
	var b strings.Builder
	for _, p := range ps {
		b.WriteString("\n  ")
		b.WriteString(p.Path + " " + p.Driver + " " + strings.Join(p.ByID, ",") + " " + strings.Join(p.ByPath, ","))
		if p.USB != nil {
			b.WriteString(" " + p.USB.VID + ":" + p.USB.PID + " " + p.USB.Manufacturer + "/" + p.USB.Product + "/" + p.USB.Serial)
		}
	}
	return b.String()
}

func TestListWithoutSysfs(t *testing.T) {
	ports, err := Lister{SysDir: t.TempDir(), DevDir: t.TempDir()}.List()
	if err != nil || len(ports) != 0 {
		t.Fatalf("List on an empty machine = %v, %v; want none", ports, err)
	}
}

func TestAttach(t *testing.T) {
	l, root := fakeMachine(t)
	ports, err := l.List()
	if err != nil {
		t.Fatal(err)
	}
	dev := filepath.Join(root, "dev")
	byID := dev + "/serial/by-id/usb-FTDI_FT232R_USB_UART_A50285BI-if00-port0"
	gone := dev + "/serial/by-id/usb-gone-if00-port0"
	notDevice := t.TempDir()
	ports = Attach(ports, []Claim{
		{Collector: "modbus-line3", Path: byID, Key: "devices"},
		{Collector: "modbus-line3", Path: byID, Key: "modbus.serial.port"},
		{Collector: "modbus-line4", Path: dev + "/ttyS0", Key: "modbus.serial.port"},
		{Collector: "modbus-spare", Path: gone, Key: "devices"},
		{Collector: "odd", Path: notDevice, Key: "devices"},
	})
	owners := map[string][]string{}
	missing := map[string]bool{}
	for _, p := range ports {
		owners[p.Path] = p.Owners()
		missing[p.Path] = p.Missing
	}
	want := map[string][]string{
		dev + "/ttyACM0": nil,
		dev + "/ttyS0":   {"modbus-line4"},
		dev + "/ttyUSB0": {"modbus-line3"},
		gone:             {"modbus-spare"},
	}
	if !reflect.DeepEqual(owners, want) {
		t.Errorf("owners = %v, want %v", owners, want)
	}
	if !missing[gone] || missing[dev+"/ttyUSB0"] {
		t.Errorf("missing = %v, want only %s", missing, gone)
	}
}

func TestClaimsOf(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "gateway.yaml")
	yaml := `version: 1
gateway: {id: gw1, data_dir: ` + dir + `}
mqtt: {broker: tcp://127.0.0.1:1883}
collectors:
  - name: line3
    image: fieldgate/collector-modbus:latest
    devices: ["/dev/serial/by-id/usb-FTDI-if00-port0:/dev/ttyUSB0", /dev/ttyS3]
    modbus:
      transport: rtu
      serial: {port: /dev/ttyUSB0, baud: 9600}
      devices: [{name: m1, unit_id: 1, tags: [{name: v, table: holding_register, address: 0, type: uint16}]}]
  - name: direct
    image: fieldgate/collector-modbus:latest
    privileged: true
    modbus:
      transport: rtu
      serial: {port: /dev/ttyACM0, baud: 9600}
      devices: [{name: m1, unit_id: 1, tags: [{name: v, table: holding_register, address: 0, type: uint16}]}]
  - name: plc
    image: fieldgate/collector-modbus:latest
    modbus:
      transport: tcp
      tcp: {address: 127.0.0.1:502}
      devices: [{name: m1, unit_id: 1, tags: [{name: v, table: holding_register, address: 0, type: uint16}]}]
`
	if err := os.WriteFile(path, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path, config.WithStat(func(string) (os.FileInfo, error) { return nil, nil }))
	if err != nil {
		t.Fatal(err)
	}
	got := ClaimsOf(cfg)
	want := []Claim{
		{Collector: "line3", Path: "/dev/serial/by-id/usb-FTDI-if00-port0", Key: "devices"},
		{Collector: "line3", Path: "/dev/ttyS3", Key: "devices"},
		{Collector: "line3", Path: "/dev/serial/by-id/usb-FTDI-if00-port0", Key: "modbus.serial.port"},
		{Collector: "direct", Path: "/dev/ttyACM0", Key: "modbus.serial.port"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ClaimsOf:\n got %+v\nwant %+v", got, want)
	}
}
