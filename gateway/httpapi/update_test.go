package httpapi

import (
	"strings"
	"testing"
	"time"

	"fieldgate/gateway/supervisor"
)

func TestUpdateMetrics(t *testing.T) {
	st := testStatus()
	if _, body := get(t, Handler(fakeSource{st}, testToken), "/metrics"); strings.Contains(body, "fieldgate_update_") {
		t.Errorf("update metrics without a firmware installed:\n%s", body)
	}
	at := time.Date(2026, 11, 30, 10, 0, 0, 0, time.UTC)
	st.Update = &supervisor.UpdateStatus{
		State:    supervisor.UpdateTrial,
		Current:  &supervisor.SlotVersion{Slot: "b", Version: "2"},
		Previous: &supervisor.SlotVersion{Slot: "a", Version: "1"},
		Trial:    &supervisor.TrialStatus{Version: "2", From: "1", Boots: 1, MaxBoots: 3, Since: at},
		Last:     &supervisor.UpdateResult{Result: "committed", Version: "1", At: at},
	}
	h := Handler(fakeSource{st}, testToken)
	_, body := get(t, h, "/metrics")
	for _, want := range []string{
		`fieldgate_update_state{state="trial"} 1`,
		`fieldgate_update_state{state="committed"} 0`,
		`fieldgate_update_state{state="rolled_back"} 0`,
		`fieldgate_update_info{current="2",previous="1"} 1`,
		`fieldgate_update_trial_boots 1`,
		`fieldgate_update_trial_max_boots 3`,
		`fieldgate_update_last_result_timestamp_seconds{result="committed",version="1"} 1.7960328e+09`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s:\n%s", want, body)
		}
	}
	if _, body := get(t, h, "/status"); !strings.Contains(body, `"update": {`) || !strings.Contains(body, `"max_boots": 3`) {
		t.Errorf("/status lacks the update state:\n%s", body)
	}
}
