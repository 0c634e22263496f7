package devsim

import (
	"testing"
	"time"

	"go.bug.st/serial"

	"fieldgate/internal/testpeer"
)

// BenchmarkTCPRead125 measures devsim's own cost per full 125-register read
// over loopback TCP (goburrow client), so collector benchmarks know the
// simulator is not their bottleneck. Reported: registers/s served.
func BenchmarkTCPRead125(b *testing.B) {
	m := startSim(b, Config{TCP: "127.0.0.1:0", Units: []Unit{{ID: 1, Profile: lookup(b, "fieldgate-bench")}}})
	c := tcpClient(b, m.Addr(), 1)
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if _, err := c.ReadHoldingRegisters(uint16(125*(i%4)), 125); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*125)/b.Elapsed().Seconds(), "registers/s")
}

// BenchmarkTCPReadFloat62 is the float32 variant (62 tags, 124 registers).
func BenchmarkTCPReadFloat62(b *testing.B) {
	m := startSim(b, Config{TCP: "127.0.0.1:0", Units: []Unit{{ID: 1, Profile: lookup(b, "fieldgate-bench")}}})
	c := tcpClient(b, m.Addr(), 1)
	b.ResetTimer()
	for b.Loop() {
		if _, err := c.ReadInputRegisters(0, 124); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*62)/b.Elapsed().Seconds(), "tags/s")
}

// BenchmarkRTUWire19200 drives devsim's wire emulation (19200 baud) over a
// pty with an ideal master (next request as soon as the answer is in) and
// reports the share of the 808 registers/s wire limit it reaches: the
// ceiling a collector measured the same way can reach on this machine.
func BenchmarkRTUWire19200(b *testing.B) {
	simEnd, clientEnd := testpeer.PtyPair(b)
	startSim(b, Config{RTU: simEnd, EmulateWire: true, Serial: Serial{Baud: 19200},
		Units: []Unit{{ID: 1, Profile: lookup(b, "fieldgate-bench")}}})
	port, err := serial.Open(clientEnd, &serial.Mode{BaudRate: 19200})
	if err != nil {
		b.Fatal(err)
	}
	defer port.Close()
	req := appendCRC([]byte{1, 3, 0, 0, 0, 125})
	buf := make([]byte, 512)
	b.ResetTimer()
	for b.Loop() {
		if _, err := port.Write(req); err != nil {
			b.Fatal(err)
		}
		for got := 0; got < 255; {
			n, err := port.Read(buf)
			if err != nil || n == 0 {
				b.Fatalf("read: %v", err)
			}
			got += n
		}
	}
	regs := float64(b.N*125) / b.Elapsed().Seconds()
	b.ReportMetric(regs, "registers/s")
	b.ReportMetric(100*regs/808.1, "%wire")
}

// BenchmarkRTUWire19200Goburrow is the same with goburrow's RTU client,
// which sleeps for the expected frame time before reading (for reference).
func BenchmarkRTUWire19200Goburrow(b *testing.B) {
	simEnd, clientEnd := testpeer.PtyPair(b)
	startSim(b, Config{RTU: simEnd, EmulateWire: true, Serial: Serial{Baud: 19200},
		Units: []Unit{{ID: 1, Profile: lookup(b, "fieldgate-bench")}}})
	_, c := rtuClient(b, clientEnd, time.Second)
	b.ResetTimer()
	for b.Loop() {
		if _, err := c.ReadHoldingRegisters(0, 125); err != nil {
			b.Fatal(err)
		}
	}
	regs := float64(b.N*125) / b.Elapsed().Seconds()
	b.ReportMetric(regs, "registers/s")
	b.ReportMetric(100*regs/808.1, "%wire")
}
