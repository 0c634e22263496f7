package devsim

import (
	"encoding/binary"
	"math"
	"net"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestHostRange(t *testing.T) {
	tests := []struct {
		from string
		n    int
		want []string // first and last
		err  string
	}{
		{from: "127.0.1.1:502", n: 1, want: []string{"127.0.1.1", "127.0.1.1"}},
		{from: "127.0.1.253:502", n: 4, want: []string{"127.0.1.253", "127.0.2.2"}},
		{from: "127.0.1.1:502", n: 1000, want: []string{"127.0.1.1", "127.0.4.238"}},
		{from: "127.0.1.1:0", n: 5000, want: []string{"127.0.1.1", "127.0.20.174"}},
		{from: "127.255.255.250:502", n: 10, err: "run past 127.255.255.255"},
		{from: "[::1]:502", n: 2, err: "IPv4"},
		{from: "localhost:502", n: 2, err: "IPv4"},
		{from: "127.0.0.1", n: 2, err: "missing port"},
	}
	for _, tt := range tests {
		got, err := HostRange(tt.from, tt.n)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("HostRange(%q, %d) error %v, want %q", tt.from, tt.n, err, tt.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("HostRange(%q, %d): %v", tt.from, tt.n, err)
			continue
		}
		if len(got) != tt.n || got[0] != tt.want[0] || got[len(got)-1] != tt.want[1] {
			t.Errorf("HostRange(%q, %d) = %d addresses %s..%s, want %s..%s", tt.from, tt.n, len(got), got[0], got[len(got)-1], tt.want[0], tt.want[1])
		}
		for _, h := range got {
			if strings.HasSuffix(h, ".0") || strings.HasSuffix(h, ".255") {
				t.Errorf("HostRange(%q, %d) holds %s", tt.from, tt.n, h)
			}
		}
		if len(slices.Compact(slices.Clone(got))) != len(got) {
			t.Errorf("HostRange(%q, %d) repeats an address", tt.from, tt.n)
		}
	}
}

// TestTCPHosts serves one unit on 300 loopback addresses (crossing a .255
// boundary) and reads it from the first, a middle and the last one.
func TestTCPHosts(t *testing.T) {
	p := lookup(t, "eastron-sdm120")
	m := startSim(t, Config{TCP: "127.0.3.200:0", TCPHosts: 300, Units: []Unit{{ID: 1, Profile: p}}}, WithClock(func() time.Time { return frozen }))
	hosts, err := HostRange(m.Addr(), 300)
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(m.Addr())
	want, err := m.Expected(1, frozen)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{hosts[0], hosts[150], hosts[299]} {
		c := tcpClient(t, net.JoinHostPort(h, port), 1)
		b, err := c.ReadInputRegisters(0, 2)
		if err != nil {
			t.Fatalf("read from %s: %v", h, err)
		}
		got := float64(math.Float32frombits(binary.BigEndian.Uint32(b)))
		if w := want["voltage"].(float64); math.Abs(got-w) > 1e-3 {
			t.Errorf("voltage from %s = %v, want %v", h, got, w)
		}
	}
}

func TestTCPHostsInvalid(t *testing.T) {
	p := lookup(t, "eastron-sdm120")
	for _, cfg := range []Config{
		{TCP: "[::1]:0", TCPHosts: 2, Units: []Unit{{ID: 1, Profile: p}}},
		{TCP: "127.0.0.1:0", TCPHosts: -1, Units: []Unit{{ID: 1, Profile: p}}},
	} {
		if _, err := NewModbus(cfg); err == nil {
			t.Errorf("NewModbus(%+v) accepted", cfg)
		}
	}
}
