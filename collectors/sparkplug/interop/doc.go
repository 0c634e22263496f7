// Package interop holds the Sparkplug B interoperability tests: the real
// collectors (built from collectors/cmd) publish to a real mosquitto, and a
// host application on Eclipse Tahu's JavaScript sparkplug-payload decodes
// every message, asks for rebirths, acts as primary host and sends DCMD
// writes; pymodbus and node-opcua are the devices. It has no code outside
// its tests.
package interop
