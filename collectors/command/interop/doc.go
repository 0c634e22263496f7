// Package interop holds the write-command tests: the real collectors
// (built from collectors/cmd) behind a real mosquitto that enforces
// compose/mosquitto.acl, written to over MQTT, the results read back from
// pymodbus and node-opcua by their own clients. It has no code outside its
// tests.
package interop
