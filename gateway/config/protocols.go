package config

import (
	"fieldgate/collectors/modbus"
	"fieldgate/collectors/opcua"
)

// ProtocolParsers validate the protocol sections with the collectors' own
// parsers, keyed by section name, and list the host files each section names
// (mounted read-only into the collector's container).
var ProtocolParsers = map[string]ProtocolParser{
	ProtocolModbus: func(path string, data []byte) ([]ProtocolFile, error) {
		_, err := modbus.ParseConfig(path, data)
		return nil, err
	},
	ProtocolOPCUA: func(path string, data []byte) ([]ProtocolFile, error) {
		c, err := opcua.Parse(path, data)
		var files []ProtocolFile
		for _, f := range c.Files() {
			files = append(files, ProtocolFile{Key: f.Key, Path: f.Path, Dir: f.Dir})
		}
		return files, err
	},
}
