package main

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"fieldgate/gateway/config"
	"fieldgate/gateway/update"
)

const bundleUsage = `usage:
  fieldgate bundle keygen --key FILE.key --pub FILE.pub [--password-file F]
  fieldgate bundle manifest --version V --arch linux/amd64|linux/arm64|linux/arm/v7 [--release TEXT] DIR
  fieldgate bundle sign --key FILE.key [--password-file F] MANIFEST
  fieldgate bundle verify [--keys DIR] [--arch A] BUNDLE
`

// cmdBundle is `fieldgate bundle …`: what a release engineer needs to make
// and sign bundles (the stock minisign tool signs and verifies them too).
func cmdBundle(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, bundleUsage)
		return &exitError{code: 2, err: errSilent}
	}
	switch args[0] {
	case "keygen":
		return bundleKeygen(args[1:], stdout, stderr)
	case "manifest":
		return bundleManifest(args[1:], stdout, stderr)
	case "sign":
		return bundleSign(args[1:], stdout, stderr)
	case "verify":
		return bundleVerify(args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, bundleUsage)
		return nil
	}
	fmt.Fprint(stderr, bundleUsage)
	return usageError("bundle: unknown command %q (valid: keygen, manifest, sign, verify)", args[0])
}

// readPassword reads a key password from a file (trailing newline dropped).
func readPassword(file string) (string, error) {
	if file == "" {
		return "", nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("password file: %w", err)
	}
	return string(bytes.TrimRight(b, "\r\n")), nil
}

func bundleKeygen(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bundle keygen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	key := fs.String("key", "", "secret key `FILE` to create (mode 0600; keep it off the gateways)")
	pub := fs.String("pub", "", "public key `FILE` to create (install it in update.keys_dir)")
	pwFile := fs.String("password-file", "", "encrypt the secret key with the password in `FILE` (scrypt, as minisign)")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 || *key == "" || *pub == "" {
		return usageError("bundle keygen: want --key FILE.key --pub FILE.pub")
	}
	pw, err := readPassword(*pwFile)
	if err != nil {
		return err
	}
	pk, err := update.GenerateKey(*key, *pub, pw)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "key %s: secret %s, public %s\n", update.KeyID(pk.ID()), *key, *pub)
	return nil
}

func bundleManifest(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bundle manifest", flag.ContinueOnError)
	fs.SetOutput(stderr)
	ver := fs.String("version", "", "bundle version: numbers separated by dots, e.g. 1.4.0 (monotonic)")
	arch := fs.String("arch", "", "platform of the bundle's binary: linux/amd64, linux/arm64 or linux/arm/v7")
	release := fs.String("release", "", "free text for people, e.g. git describe")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageError("bundle manifest: want the bundle DIR")
	}
	m, err := update.WriteManifest(pos[0], update.ManifestInfo{Version: *ver, Release: *release, Architecture: *arch})
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: fieldgate %s for %s, %d files, %d images pinned\n",
		filepath.Join(pos[0], update.ManifestFile), m.Version, m.Architecture, len(m.Files), len(m.Images))
	return nil
}

func bundleSign(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bundle sign", flag.ContinueOnError)
	fs.SetOutput(stderr)
	key := fs.String("key", "", "minisign secret key `FILE` (from fieldgate bundle keygen or minisign -G)")
	pwFile := fs.String("password-file", "", "the secret key's password in `FILE`, if it is encrypted")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 || *key == "" {
		return usageError("bundle sign: want --key FILE and the MANIFEST to sign")
	}
	pw, err := readPassword(*pwFile)
	if err != nil {
		return err
	}
	sk, err := update.LoadPrivateKey(*key, pw)
	if err != nil {
		return err
	}
	if err := update.SignFile(pos[0], sk, time.Now()); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s.minisig: signed with key %s\n", pos[0], update.KeyID(sk.ID()))
	return nil
}

func bundleVerify(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bundle verify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	keys := fs.String("keys", config.DefaultUpdate.KeysDir, "trusted public keys `DIR` (*.pub)")
	arch := fs.String("arch", update.HostArchitecture(), "platform the bundle must be built for")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageError("bundle verify: want the BUNDLE")
	}
	keysDir, err := filepath.Abs(*keys)
	if err != nil {
		return err
	}
	inst, err := update.NewInstaller(update.NewStore(os.TempDir()), keysDir, update.WithArchitecture(*arch))
	if err != nil {
		return err
	}
	v, err := inst.Verify(pos[0])
	if err != nil {
		return fmt.Errorf("bundle refused: %w", err)
	}
	fmt.Fprintf(stdout, "%s: fieldgate %s for %s, signed with %s, %d files and %d pinned images verified\n",
		pos[0], v.Manifest.Version, v.Manifest.Architecture, v.KeyFile, len(v.Manifest.Files), len(v.Manifest.Images))
	return nil
}
