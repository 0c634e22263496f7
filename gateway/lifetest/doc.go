// Package lifetest holds the "life in the field" suite (issue 8): the
// fieldgate binary with the real Modbus collector image against a private
// containerd, mosquitto, pymodbus and socat, through a reboot, an upgrade by
// a new image archive, a re-plugged serial line and a udev by-path device
// name. It has tests only; they run in their own package so `go test ./...`
// runs them in parallel with the other end-to-end suites.
package lifetest
