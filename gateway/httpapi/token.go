package httpapi

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"fieldgate/internal/nofollow"
)

// TokenFile is the name of the operator token in the supervisor's own state
// directory ({data_dir}/supervisor, 0700, mounted into no container).
//
// The HTTP API listens on loopback, and collectors share the host network:
// without a token any collector — compromised or not — could stop the
// others. Reading the token needs root on the host (or whoever owns the
// state dir), which a collector never has: non-privileged collectors run as
// their own uid, and no collector sees the supervisor's directory.
const TokenFile = "api-token"

// maxTokenBytes bounds what ReadToken reads.
const maxTokenBytes = 256

// NewToken writes a fresh random operator token to dir/TokenFile (0600,
// written to a temporary name and renamed, never through a link) and returns
// it. The supervisor makes a new one at every start.
func NewToken(dir string) (string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("operator token dir %q: %w", dir, err)
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return "", fmt.Errorf("operator token: %w", err)
	}
	tok := hex.EncodeToString(raw)
	d, err := nofollow.OpenDir(dir)
	if err != nil {
		return "", fmt.Errorf("operator token dir %q: %w", dir, err)
	}
	defer d.Close()
	tmp := TokenFile + ".tmp"
	_ = nofollow.Remove(d, tmp)
	f, err := nofollow.OpenAppend(d, tmp, 0o600)
	if err != nil {
		return "", fmt.Errorf("operator token %q: %w", filepath.Join(dir, tmp), err)
	}
	if _, err := f.WriteString(tok + "\n"); err != nil {
		f.Close()
		return "", fmt.Errorf("operator token %q: %w", filepath.Join(dir, tmp), err)
	}
	if err := f.Close(); err != nil {
		return "", fmt.Errorf("operator token %q: %w", filepath.Join(dir, tmp), err)
	}
	if err := nofollow.Rename(d, tmp, TokenFile); err != nil {
		return "", fmt.Errorf("operator token %q: %w", filepath.Join(dir, TokenFile), err)
	}
	return tok, nil
}

// ReadToken reads the operator token file at path (bounded, not through a
// link).
func ReadToken(path string) (string, error) {
	b, err := nofollow.ReadFile(filepath.Dir(path), filepath.Base(path), maxTokenBytes)
	if err != nil {
		return "", fmt.Errorf("operator token %q: %w", path, err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("operator token %q is empty", path)
	}
	return tok, nil
}

// authorized reports whether the request carries `Authorization: Bearer
// token`, compared in constant time.
func authorized(header, token string) bool {
	got, ok := strings.CutPrefix(header, "Bearer ")
	return ok && token != "" && subtle.ConstantTimeCompare([]byte(got), []byte(token)) == 1
}
