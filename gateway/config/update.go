package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"gopkg.in/yaml.v3"

	"fieldgate/collectors/configfile"
)

// Update is the `update:` section: how a firmware update installed with
// `fieldgate update BUNDLE` is put on trial, committed or rolled back, and
// which keys may sign a bundle.
type Update struct {
	// ConfirmWithin is how long a new version has, from each of its starts,
	// to prove itself healthy before it is rolled back; default 10m.
	ConfirmWithin configfile.Duration `yaml:"confirm_within"`
	// HealthyFor is how long every collector must run and publish, and the
	// gateway stay connected to the broker, for the new version to commit
	// itself; default 2m. Less than ConfirmWithin.
	HealthyFor configfile.Duration `yaml:"healthy_for"`
	// KeysDir holds the trusted minisign public keys (*.pub); default
	// /etc/fieldgate/keys. Removing a key's file revokes it.
	KeysDir string `yaml:"keys_dir"`
	// BootAttempts is how many times a new version may be started before the
	// boot selector rolls it back; default 3.
	BootAttempts int `yaml:"boot_attempts"`

	Pos configfile.Pos `yaml:"-"`
}

// maxBootAttempts bounds update.boot_attempts: more would let a version that
// cannot start keep a gateway down for long.
const maxBootAttempts = 20

// validateUpdate applies the defaults of empty keys and reports bad values at
// their lines of d.
func validateUpdate(u *Update, d document, add func(configfile.Pos, string, ...any)) {
	if u.KeysDir == "" {
		u.KeysDir = DefaultUpdate.KeysDir
	}
	if !d.has("update", "boot_attempts") {
		u.BootAttempts = DefaultUpdate.BootAttempts
	}
	if u.ConfirmWithin <= 0 {
		add(d.pos("update", "confirm_within"), "update.confirm_within must be positive (default %s)", DefaultUpdate.ConfirmWithin)
	}
	if u.HealthyFor <= 0 {
		add(d.pos("update", "healthy_for"), "update.healthy_for must be positive (default %s)", DefaultUpdate.HealthyFor)
	} else if u.ConfirmWithin > 0 && u.HealthyFor >= u.ConfirmWithin {
		add(d.pos("update", "healthy_for"), "update.healthy_for %s must be shorter than update.confirm_within %s", u.HealthyFor, u.ConfirmWithin)
	}
	if !filepath.IsAbs(u.KeysDir) {
		add(d.pos("update", "keys_dir"), "update.keys_dir %q must be an absolute path", u.KeysDir)
	}
	if u.BootAttempts < 1 || u.BootAttempts > maxBootAttempts {
		add(d.pos("update", "boot_attempts"), "update.boot_attempts %d out of range (valid: 1..%d)", u.BootAttempts, maxBootAttempts)
	}
}

// UpdateSettings are the parts of gateway.yaml that installing, selecting
// and reporting a firmware version need.
type UpdateSettings struct {
	// DataDir is gateway.data_dir (the slots live in DataDir/slots).
	DataDir string
	Update  Update
}

// LoadUpdateSettings reads gateway.data_dir and the update: section of the
// gateway.yaml at path, checking those strictly (unknown keys, types, values,
// at their lines) and nothing else: an update must stay installable, and the
// boot selector must keep working, while another part of the file is wrong
// — the update may be what fixes it. A missing file gives the defaults.
func LoadUpdateSettings(path string) (*UpdateSettings, error) {
	s := &UpdateSettings{DataDir: DefaultGateway.DataDir, Update: DefaultUpdate}
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read gateway config: %w", err)
	}
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	d := document{&root}
	errs := configfile.NewErrors(path)
	if _, n := d.find("gateway", "data_dir"); n != nil {
		var dir string
		if err := configfile.DecodeNode(path, n, &dir); err != nil {
			errs.Merge(d.pos("gateway", "data_dir"), err)
		} else if dir != "" {
			s.DataDir = dir
		}
	}
	if !filepath.IsAbs(s.DataDir) {
		errs.Add(d.pos("gateway", "data_dir"), "gateway.data_dir %q must be an absolute path", s.DataDir)
	}
	if _, n := d.find("update"); n != nil {
		if err := configfile.DecodeNode(path, n, &s.Update); err != nil {
			errs.Merge(d.pos("update"), err)
		}
	}
	validateUpdate(&s.Update, d, errs.Add)
	if err := errs.Err(); err != nil {
		return nil, err
	}
	return s, nil
}
