package config

// ProtocolParsers validate the protocol sections with the collectors' own
// parsers, keyed by section name.
var ProtocolParsers = map[string]ProtocolParser{}
