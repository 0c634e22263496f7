package runenv

import (
	"strings"
	"testing"
)

func TestLoadPayload(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		want Env    // compared on the payload fields
		err  string // substring; "" for none
	}{
		{"default", nil, Env{Payload: PayloadFieldgate}, ""},
		{"sparkplug", map[string]string{"MQTT_PAYLOAD": "sparkplug", "SPARKPLUG_GROUP_ID": "plant 1",
			"SPARKPLUG_PRIMARY_HOST_ID": "scada", "SPARKPLUG_ALIASES": "true"},
			Env{Payload: PayloadSparkplug, SparkplugGroupID: "plant 1", SparkplugPrimaryHostID: "scada", SparkplugAliases: true}, ""},
		{"unknown payload", map[string]string{"MQTT_PAYLOAD": "protobuf"}, Env{}, `MQTT_PAYLOAD: unknown payload "protobuf" (valid: fieldgate, sparkplug)`},
		{"bad group", map[string]string{"SPARKPLUG_GROUP_ID": "a/b"}, Env{}, `SPARKPLUG_GROUP_ID: "a/b" is not a valid Sparkplug id`},
		{"bad host", map[string]string{"SPARKPLUG_PRIMARY_HOST_ID": "#"}, Env{}, `SPARKPLUG_PRIMARY_HOST_ID: "#" is not a valid Sparkplug id`},
		{"bad aliases", map[string]string{"SPARKPLUG_ALIASES": "maybe"}, Env{}, `SPARKPLUG_ALIASES: invalid value "maybe" (valid: true, false)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := Load(func(k string) string { return tt.env[k] }, "modbus")
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if e.Payload != tt.want.Payload || e.SparkplugGroupID != tt.want.SparkplugGroupID ||
				e.SparkplugPrimaryHostID != tt.want.SparkplugPrimaryHostID || e.SparkplugAliases != tt.want.SparkplugAliases {
				t.Fatalf("got %+v", e)
			}
		})
	}
}
