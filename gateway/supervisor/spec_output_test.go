package supervisor

import (
	"strings"
	"testing"

	"fieldgate/gateway/config"
)

// TestSpecSparkplugEnv: a Sparkplug collector gets MQTT_PAYLOAD and
// SPARKPLUG_*; a JSON one's spec (and hash) is what it was.
func TestSpecSparkplugEnv(t *testing.T) {
	cfg, err := config.Parse("g.yml", []byte(`version: 1
gateway: {id: gw1}
mqtt: {broker: tcp://b:1883, group_id: plant1}
collectors:
  - name: sp
    image: fieldgate/collector-modbus:latest
    mqtt: {payload: sparkplug, aliases: true}
    modbus: {transport: tcp, tcp: {address: "10.0.0.7:502"}, devices: [{name: d, tags: [{name: t, table: coil, address: 0}]}]}
  - name: js
    image: fieldgate/collector-modbus:latest
    modbus: {transport: tcp, tcp: {address: "10.0.0.7:502"}, devices: [{name: d, tags: [{name: t, table: coil, address: 0}]}]}
`))
	if err != nil {
		t.Fatal(err)
	}
	sp := BuildSpec(cfg, &cfg.Collectors[0])
	for k, want := range map[string]string{"MQTT_PAYLOAD": "sparkplug", "SPARKPLUG_GROUP_ID": "plant1", "SPARKPLUG_ALIASES": "true", "SPARKPLUG_PRIMARY_HOST_ID": ""} {
		if got := sp.EnvValue(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	js := BuildSpec(cfg, &cfg.Collectors[1])
	for _, kv := range js.Env {
		if strings.HasPrefix(kv, "SPARKPLUG_") || strings.HasPrefix(kv, "MQTT_PAYLOAD=") {
			t.Errorf("JSON collector got %s", kv)
		}
	}
}
