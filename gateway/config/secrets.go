package config

import (
	"path/filepath"
	"strings"

	"gopkg.in/yaml.v3"

	"fieldgate/collectors/configfile"
)

// SecretFile is a host file or directory a protocol section names (an OPC UA
// password file, private key, certificate, trust directory). The supervisor
// bind-mounts it read-only at Container, and the collector's file names
// Container in its place: gateway.yaml always speaks of host paths.
type SecretFile struct {
	// Key is its place in the protocol section: "auth.password_file".
	Key string
	// Host is the path written in gateway.yaml; Container where the
	// collector finds it: {ContainerFilesDir}/{protocol}/{Key}.
	Host, Container string
	// Dir is true for a directory (the OPC UA trust directory).
	Dir bool
}

// ContainerFilesDir is where a collector finds the files its protocol
// section names, one per key: /etc/fieldgate/opcua/auth.password_file.
const ContainerFilesDir = "/etc/fieldgate"

// secretFiles checks the files a protocol section names (absolute, existing,
// file or directory as expected), records them on c and rewrites their
// paths in section, the collector's copy, to the container paths.
func (v *validator) secretFiles(c *Collector, who, proto string, section *yaml.Node, files []ProtocolFile, at func(keys ...any) configfile.Pos) {
	for _, f := range files {
		keys := append([]any{proto}, splitKey(f.Key)...)
		pos := at(keys...)
		if msg := v.checkHostFile(f.Path, f.Dir); msg != "" {
			v.add(pos, "%s: %s.%s: %q %s", who, proto, f.Key, f.Path, msg)
			continue
		}
		dst := ContainerFilesDir + "/" + proto + "/" + f.Key
		if !setScalar(section, strings.Split(f.Key, "."), dst) {
			continue
		}
		c.SecretFiles = append(c.SecretFiles, SecretFile{Key: f.Key, Host: f.Path, Container: dst, Dir: f.Dir})
	}
}

func splitKey(key string) []any {
	var out []any
	for _, k := range strings.Split(key, ".") {
		out = append(out, k)
	}
	return out
}

// setScalar replaces the value at path (mapping keys) under n with value.
// Mappings reached through an alias are copied first, so the anchor's other
// uses keep their value.
func setScalar(n *yaml.Node, path []string, value string) bool {
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		*n = *canonical(n.Alias)
	}
	if n.Kind != yaml.MappingNode || len(path) == 0 {
		return false
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value != path[0] {
			continue
		}
		if len(path) == 1 {
			n.Content[i+1] = &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: value}
			return true
		}
		return setScalar(n.Content[i+1], path[1:], value)
	}
	return false
}

// checkHostFile says what is wrong with a host path the supervisor mounts
// into collectors ("" when nothing): it must be absolute and exist, as a
// directory when dir is set, else as a regular file.
func (v *validator) checkHostFile(path string, dir bool) string {
	if !filepath.IsAbs(path) {
		return "must be an absolute path on this host (it is mounted read-only into the collectors)"
	}
	fi, err := v.stat(path)
	switch {
	case err != nil:
		return "does not exist on this host"
	case fi == nil:
		return ""
	case dir && !fi.IsDir():
		return "is not a directory"
	case !dir && !fi.Mode().IsRegular():
		return "is not a regular file"
	}
	return ""
}
