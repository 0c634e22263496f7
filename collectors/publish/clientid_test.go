package publish

import (
	"strings"
	"testing"
)

func TestClientID(t *testing.T) {
	long := strings.Repeat("a", 60)
	tests := []struct {
		name, gateway, role string
		want                string // exact, or "" to check only shape
	}{
		{"short stays readable", "line3-gw01", "modbus-line3", "fg-line3-gw01-modbus-line3"},
		{"supervisor", "gw1", "supervisor", "fg-gw1-supervisor"},
		{"exactly the limit", strings.Repeat("g", MaxClientID-len("fg--c")), "c", "fg-" + strings.Repeat("g", MaxClientID-len("fg--c")) + "-c"},
		{"long", long, "modbus-line3", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := ClientID(tc.gateway, tc.role)
			if tc.want != "" && got != tc.want {
				t.Errorf("ClientID = %q, want %q", got, tc.want)
			}
			if len(got) > MaxClientID {
				t.Errorf("ClientID %q is %d long, over %d", got, len(got), MaxClientID)
			}
			if got != ClientID(tc.gateway, tc.role) {
				t.Error("not stable")
			}
		})
	}
	// Two long names differing only past the cut used to be the same id.
	a, b := ClientID(long, "modbus-line3"), ClientID(long, "modbus-line4")
	if a == b {
		t.Fatalf("long ids collide: %q", a)
	}
	if !strings.HasPrefix(a, "fg-"+long[:40]) {
		t.Errorf("long id %q lost its readable prefix", a)
	}
}
