package opcua

import (
	"fmt"
	"strings"
)

// Environment variables that override (or, without a file, make up) the
// collector file, so a lab bench can run the collector from its
// environment alone:
//
//	OPCUA_ENDPOINT  the endpoint URL
//	OPCUA_MODE      subscribe | poll
//	OPCUA_SECURITY  POLICY/MODE, e.g. Basic256Sha256/SignAndEncrypt, or None
//	OPCUA_NODES     DEVICE/NAME=NODE_ID entries separated by commas, e.g.
//	                "boiler1/temperature=ns=2;s=Boiler1.Temperature,boiler1/running=ns=2;s=Boiler1.Running"
//	                (replaces the file's nodes)
const (
	EnvEndpoint = "OPCUA_ENDPOINT"
	EnvMode     = "OPCUA_MODE"
	EnvSecurity = "OPCUA_SECURITY"
	EnvNodes    = "OPCUA_NODES"
)

// ApplyEnv overrides c with the OPCUA_* variables read through getenv and
// validates the result.
func (c *Config) ApplyEnv(getenv func(string) string) error {
	if v := getenv(EnvEndpoint); v != "" {
		c.Endpoint = v
	}
	if v := getenv(EnvMode); v != "" {
		c.Mode = v
	}
	if v := getenv(EnvSecurity); v != "" {
		policy, mode, ok := strings.Cut(v, "/")
		if !ok {
			if v != PolicyNone {
				return fmt.Errorf("%s: want POLICY/MODE (e.g. Basic256Sha256/SignAndEncrypt) or None, got %q", EnvSecurity, v)
			}
			mode = SecModeNone
		}
		s := Security{}
		if c.Security != nil {
			s = *c.Security
		}
		s.Policy, s.Mode = policy, mode
		c.Security = &s
	}
	if v := getenv(EnvNodes); v != "" {
		var nodes []Node
		for _, entry := range strings.Split(v, ",") {
			entry = strings.TrimSpace(entry)
			if entry == "" {
				continue
			}
			tagPath, id, ok := strings.Cut(entry, "=")
			dev, name, ok2 := strings.Cut(tagPath, "/")
			if !ok || !ok2 {
				return fmt.Errorf("%s: entry %q is not DEVICE/NAME=NODE_ID", EnvNodes, entry)
			}
			nodes = append(nodes, Node{Device: dev, Name: name, NodeID: id})
		}
		c.Nodes = nodes
	}
	if err := c.Validate(); err != nil {
		return fmt.Errorf("opcua config after environment overrides: %w", err)
	}
	return nil
}
