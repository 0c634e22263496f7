package config

import (
	"maps"
	"os"
	"testing"
)

func TestOutputEnv(t *testing.T) {
	data, err := os.ReadFile("testdata/sparkplug.good.yml")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := Parse("sparkplug.good.yml", data, WithStat(fakeStat), WithHostname(fakeHostname))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		collector string
		want      map[string]string
	}{
		{"plc", map[string]string{"MQTT_PAYLOAD": "sparkplug", "SPARKPLUG_GROUP_ID": "plant1",
			"SPARKPLUG_PRIMARY_HOST_ID": "scada", "SPARKPLUG_ALIASES": "true"}},
		{"json", map[string]string{}}, // the JSON contract: nothing added, specs unchanged
	}
	for _, tt := range tests {
		for i := range cfg.Collectors {
			if c := &cfg.Collectors[i]; c.Name == tt.collector {
				if got := cfg.Output(c).Env(); !maps.Equal(got, tt.want) {
					t.Errorf("collector %s: env %v, want %v", tt.collector, got, tt.want)
				}
			}
		}
	}
	min, err := Parse("m.yml", []byte("version: 1\nmqtt: {broker: b}\ncollectors: []\n"), WithHostname(fakeHostname))
	if err != nil {
		t.Fatal(err)
	}
	if min.MQTT.Payload != PayloadFieldgate {
		t.Errorf("default payload %q, want fieldgate", min.MQTT.Payload)
	}
}
