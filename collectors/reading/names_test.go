package reading

import (
	"strings"
	"testing"
)

func TestNames(t *testing.T) {
	tests := []struct {
		name          string
		device, tag   bool // valid as a device name, as a tag name
		deviceMessage string
	}{
		{name: "meter1", device: true, tag: true},
		{name: "line-3_boiler.1", device: true, tag: true},
		{name: "", deviceMessage: "empty"},
		{name: "a/b", deviceMessage: "topic level"},
		{name: "a+", deviceMessage: "topic level"},
		{name: "#", deviceMessage: "topic level"},
		{name: "nul\x00", deviceMessage: "topic level"},
		{name: "two words", tag: true, deviceMessage: "topic level"},
		{name: "Temperatur °C", tag: true, deviceMessage: "topic level"},
		{name: "tab\there", deviceMessage: "topic level"},
		{name: strings.Repeat("x", MaxNameLen), device: true, tag: true},
		{name: strings.Repeat("x", MaxNameLen+1), deviceMessage: "longer than 128"},
	}
	for _, tc := range tests {
		err := CheckDeviceName(tc.name)
		if (err == nil) != tc.device || err != nil && !strings.Contains(err.Error(), tc.deviceMessage) {
			t.Errorf("CheckDeviceName(%q) = %v, want valid=%v (%s)", tc.name, err, tc.device, tc.deviceMessage)
		}
		if err := CheckTagName(tc.name); (err == nil) != tc.tag {
			t.Errorf("CheckTagName(%q) = %v, want valid=%v", tc.name, err, tc.tag)
		}
	}
}
