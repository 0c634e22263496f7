package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestUpdateDefaults(t *testing.T) {
	cfg, err := Load("testdata/minimal.good.yml", WithStat(fakeStat), WithHostname(fakeHostname))
	if err != nil {
		t.Fatal(err)
	}
	u := cfg.Update
	if u.ConfirmWithin.D() != 10*time.Minute || u.HealthyFor.D() != 2*time.Minute ||
		u.KeysDir != "/etc/fieldgate/keys" || u.BootAttempts != 3 {
		t.Errorf("update defaults = %+v", u)
	}
	cfg, err = Load("testdata/update.good.yml", WithStat(fakeStat), WithHostname(fakeHostname))
	if err != nil {
		t.Fatal(err)
	}
	if u := cfg.Update; u.ConfirmWithin.D() != 30*time.Second || u.HealthyFor.D() != 5*time.Second || u.BootAttempts != 5 {
		t.Errorf("update = %+v", u)
	}
}

// TestLoadUpdateSettings checks the partial reader that `fieldgate update`
// and the boot selector use: it reads gateway.data_dir and update: strictly
// and ignores problems elsewhere in the file.
func TestLoadUpdateSettings(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name, body string
		wantDir    string
		wantErr    string
	}{
		{"missing file", "", DefaultGateway.DataDir, ""},
		{"other sections broken", "version: 7\ngateway: {data_dir: /srv/fg, id: 'bad id'}\ncollectors: [{nonsense: 1}]\n", "/srv/fg", ""},
		{"update read", "gateway: {data_dir: /srv/fg}\nupdate: {healthy_for: 1s, confirm_within: 3s, keys_dir: /k}\n", "/srv/fg", ""},
		{"update strict", "update:\n  confirm_within: 3s\n  healthy_for: 1s\n  colour: red\n", "", `:4: unknown key "colour"`},
		{"update values", "update: {healthy_for: 1h}\n", "", ":1: update.healthy_for 1h0m0s must be shorter than update.confirm_within 10m0s"},
		{"relative data dir", "gateway: {data_dir: data}\n", "", `:1: gateway.data_dir "data" must be an absolute path`},
		{"syntax", "gateway: [\n", "", "yaml:"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, "absent.yaml")
			if tc.body != "" {
				path = write(strings.ReplaceAll(tc.name, " ", "-")+".yaml", tc.body)
			}
			s, err := LoadUpdateSettings(path)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if s.DataDir != tc.wantDir {
				t.Errorf("data dir = %q, want %q", s.DataDir, tc.wantDir)
			}
		})
	}
}
