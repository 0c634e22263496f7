package reading

import (
	"fmt"
	"regexp"
	"strings"
)

// MaxNameLen bounds device and tag names: they are topic levels and JSON
// keys, and a subscriber's database column.
const MaxNameLen = 128

// deviceNameRe is what a device name may be: it is an MQTT topic level
// ({prefix}/{gateway}/data/{collector}/{device}), so no '/', '+', '#',
// NUL or space, and nothing a shell or file name would trip over.
var deviceNameRe = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)

// CheckDeviceName is the one rule for device names of every protocol: letters,
// digits, '_', '-' and '.', at most MaxNameLen characters.
func CheckDeviceName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("device name is empty")
	case len(name) > MaxNameLen:
		return fmt.Errorf("device name %q is longer than %d characters", name[:32]+"…", MaxNameLen)
	case !deviceNameRe.MatchString(name):
		return fmt.Errorf("invalid device name %q (use letters, digits, '_', '-', '.'; it is an MQTT topic level)", name)
	}
	return nil
}

// CheckTagName is the one rule for tag names of every protocol: not empty,
// at most MaxNameLen bytes, and none of the MQTT topic characters '/', '+',
// '#' nor control characters (NUL included), so a tag can become a topic
// level or a Sparkplug metric name as it is.
func CheckTagName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("tag name is empty")
	case len(name) > MaxNameLen:
		return fmt.Errorf("tag name %q is longer than %d bytes", name[:32]+"…", MaxNameLen)
	case strings.ContainsAny(name, "/+#"):
		return fmt.Errorf("invalid tag name %q: '/', '+' and '#' are MQTT topic characters", name)
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("invalid tag name %q: control character %U", name, r)
		}
	}
	return nil
}
