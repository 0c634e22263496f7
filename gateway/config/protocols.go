package config

import (
	"fieldgate/collectors/modbus"
	"fieldgate/collectors/opcua"
)

// ProtocolParsers validate the protocol sections with the collectors' own
// parsers, keyed by section name.
var ProtocolParsers = map[string]ProtocolParser{
	ProtocolModbus: func(path string, data []byte) error {
		_, err := modbus.ParseConfig(path, data)
		return err
	},
	ProtocolOPCUA: func(path string, data []byte) error {
		_, err := opcua.Parse(path, data)
		return err
	},
}
