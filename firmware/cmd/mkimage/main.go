// Command mkimage writes a collector's multi-platform OCI image archive
// (see package fieldgate/firmware/ociimage for the archive format).
//
//	go run ./firmware/cmd/mkimage --name fieldgate/collector-modbus --version 1.4.0 \
//	    --binary linux/amd64=bin/linux_amd64/modbus-collector \
//	    --binary linux/arm64=bin/linux_arm64/modbus-collector \
//	    --binary linux/arm/v7=bin/linux_arm_v7/modbus-collector \
//	    --out dist/images/collector-modbus.tar
//
// The image is tagged with --version and, unless --latest=false, "latest".
// --file, --cmd, --user and --dir add a dynamically linked program's
// libraries, default arguments, a user and writable directories (the lab
// bench's broker image; see firmware/build-images.sh).
// Timestamps come from --created, else $SOURCE_DATE_EPOCH, else the Unix
// epoch, so the same binaries always give the same digests.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"fieldgate/firmware/ociimage"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Getenv); err != nil {
		fmt.Fprintln(os.Stderr, "mkimage:", err)
		os.Exit(1)
	}
}

// listFlag collects a repeatable string flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(s string) error { *l = append(*l, s); return nil }

func run(_ context.Context, args []string, stdout io.Writer, getenv func(string) string) error {
	fs := flag.NewFlagSet("mkimage", flag.ContinueOnError)
	var (
		name       = fs.String("name", "", "image repository, e.g. fieldgate/collector-modbus")
		version    = fs.String("version", "", "version tag, e.g. 1.4.0")
		latest     = fs.Bool("latest", true, "also tag the image \"latest\"")
		entrypoint = fs.String("entrypoint", "", "binary path inside the image (default / + the binary's base name)")
		out        = fs.String("out", "", "archive to write, e.g. dist/images/collector-modbus.tar")
		created    = fs.String("created", "", "image timestamp, RFC 3339 (default $SOURCE_DATE_EPOCH, else the Unix epoch)")
		dockerPlat = fs.String("docker-platform", "", "platform listed for Docker's classic image store (default linux/amd64)")
		maxSize    = fs.Int64("max-size", ociimage.DefaultMaxImageBytes, "size limit of each platform's image in bytes (negative: none)")
		user       = fs.String("user", "", "user the image runs as, numeric UID:GID (default root)")
		binaries   listFlag
		tags       listFlag
		envs       listFlag
		cmdArgs    listFlag
		files      listFlag
		dirs       listFlag
	)
	fs.Var(&binaries, "binary", "PLATFORM=PATH of a static binary (repeatable; platforms: "+strings.Join(ociimage.SupportedPlatforms, ", ")+")")
	fs.Var(&tags, "tag", "extra tag (repeatable)")
	fs.Var(&envs, "env", "default environment KEY=VALUE in the image (repeatable)")
	fs.Var(&cmdArgs, "cmd", "default argument to the entrypoint (repeatable, in order)")
	fs.Var(&files, "file", "extra file HOST_PATH=IMAGE_PATH in every platform's image, mode from the host file (repeatable)")
	fs.Var(&dirs, "dir", "extra directory in the image, mode 0755 (repeatable)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	var errs []error
	if *version == "" {
		errs = append(errs, errors.New("--version is required"))
	}
	if *out == "" {
		errs = append(errs, errors.New("--out is required"))
	}
	cfg := ociimage.Config{
		Name:           *name,
		Entrypoint:     *entrypoint,
		Env:            envs,
		Binaries:       map[string]string{},
		DockerPlatform: *dockerPlat,
		MaxImageBytes:  *maxSize,
		Cmd:            cmdArgs,
		User:           *user,
	}
	if len(dirs) > 0 {
		cfg.Dirs = append(append([]string(nil), ociimage.DefaultDirs...), dirs...)
	}
	for _, f := range files {
		src, dst, ok := strings.Cut(f, "=")
		if !ok || src == "" || dst == "" {
			errs = append(errs, fmt.Errorf("--file %q: want HOST_PATH=IMAGE_PATH", f))
			continue
		}
		st, err := os.Stat(src)
		if err != nil {
			errs = append(errs, fmt.Errorf("--file %q: %w", f, err))
			continue
		}
		cfg.Files = append(cfg.Files, ociimage.File{Source: src, Path: dst, Mode: int64(st.Mode().Perm() & 0o755)})
	}
	if *version != "" {
		cfg.Tags = append(cfg.Tags, *version)
	}
	if *latest && *version != "latest" {
		cfg.Tags = append(cfg.Tags, "latest")
	}
	cfg.Tags = append(cfg.Tags, tags...)
	for _, b := range binaries {
		plat, p, ok := strings.Cut(b, "=")
		if !ok || plat == "" || p == "" {
			errs = append(errs, fmt.Errorf("--binary %q: want PLATFORM=PATH", b))
			continue
		}
		if _, dup := cfg.Binaries[plat]; dup {
			errs = append(errs, fmt.Errorf("--binary: platform %q given twice", plat))
		}
		cfg.Binaries[plat] = p
	}
	switch {
	case *created != "":
		t, err := time.Parse(time.RFC3339, *created)
		if err != nil {
			errs = append(errs, fmt.Errorf("--created %q: %w", *created, err))
		}
		cfg.Created = t
	case getenv("SOURCE_DATE_EPOCH") != "":
		s := getenv("SOURCE_DATE_EPOCH")
		sec, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			errs = append(errs, fmt.Errorf("SOURCE_DATE_EPOCH %q: %w", s, err))
		}
		cfg.Created = time.Unix(sec, 0).UTC()
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(*out), 0o755); err != nil {
		return err
	}
	res, err := ociimage.Build(cfg, *out)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: %d bytes, index %s\n", *out, res.ArchiveBytes, res.IndexDigest)
	for _, n := range res.Names {
		fmt.Fprintf(stdout, "  name %s\n", n)
	}
	for _, im := range res.Images {
		fmt.Fprintf(stdout, "  %-13s %s %8d bytes (%.2f MiB)\n", im.Platform, im.Digest, im.Size, float64(im.Size)/(1<<20))
	}
	return nil
}
