package devsim_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"time"

	"github.com/goburrow/modbus"

	"fieldgate/devices/devsim"
	"fieldgate/devices/profiles"
)

// A simulated SDM120 on Modbus TCP, its values frozen at one instant, read
// back by a Modbus master.
func ExampleNewModbus() {
	p, err := profiles.Lookup("eastron-sdm120")
	if err != nil {
		panic(err)
	}
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	sim, err := devsim.NewModbus(devsim.Config{
		TCP:   "127.0.0.1:0",
		Units: []devsim.Unit{{ID: 1, Profile: p}},
	}, devsim.WithClock(func() time.Time { return at }))
	if err != nil {
		panic(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go sim.Run(ctx)
	if err := sim.WaitReady(ctx); err != nil {
		panic(err)
	}

	h := modbus.NewTCPClientHandler(sim.Addr())
	h.SlaveId = 1
	defer h.Close()
	b, err := modbus.NewClient(h).ReadInputRegisters(0x0046, 2) // frequency, float32 ABCD
	if err != nil {
		panic(err)
	}
	want, _ := sim.Expected(1, at)
	fmt.Printf("frequency %.3f Hz (expected %.3f)\n", math.Float32frombits(binary.BigEndian.Uint32(b)), want["frequency"])
	// Output: frequency 50.000 Hz (expected 50.000)
}
