package update

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"aead.dev/minisign"
)

// Signatures are minisign's (ed25519; aead.dev/minisign), so that a release
// engineer can sign and verify with `fieldgate bundle` or with the stock
// `minisign` tool alike. fieldgate signs the prehashed way (BLAKE2b-512, the
// default of minisign ≥ 0.10) and verifies both kinds.

// maxKeyBytes bounds a key file (a minisign public key is ~100 bytes, a
// secret key ~250).
const maxKeyBytes = 4 << 10

// KeyID formats a minisign key id as the minisign tool prints it.
func KeyID(id uint64) string { return fmt.Sprintf("%016X", id) }

// Keyring is the set of trusted public keys: every *.pub file of a
// directory. Several keys may be trusted at once (rotation); removing a
// key's file revokes it.
type Keyring struct {
	dir  string
	keys map[uint64]trustedKey
}

type trustedKey struct {
	key  minisign.PublicKey
	file string
}

// LoadKeys reads the *.pub files of dir. A file that is not a minisign public
// key is an error naming it; no key at all is ErrNoKeys.
func LoadKeys(dir string) (*Keyring, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.pub"))
	if err != nil {
		return nil, err
	}
	k := &Keyring{dir: dir, keys: map[uint64]trustedKey{}}
	for _, f := range files {
		// The keys directory is root's (not a path a container can write):
		// an administrator may link a key in from elsewhere.
		data, err := readBounded(f, maxKeyBytes, true)
		if err != nil {
			return nil, fmt.Errorf("trusted key: %w", err)
		}
		var pub minisign.PublicKey
		if err := pub.UnmarshalText(bytes.TrimSpace(data)); err != nil {
			return nil, fmt.Errorf("trusted key %q: not a minisign public key: %w", f, err)
		}
		if other, dup := k.keys[pub.ID()]; dup {
			return nil, fmt.Errorf("trusted key %q: key %s is also in %q", f, KeyID(pub.ID()), other.file)
		}
		k.keys[pub.ID()] = trustedKey{key: pub, file: f}
	}
	if len(k.keys) == 0 {
		return nil, fmt.Errorf("%w in %q (*.pub): install your release public key there first", ErrNoKeys, dir)
	}
	return k, nil
}

// IDs lists the trusted key ids, sorted.
func (k *Keyring) IDs() []string {
	ids := make([]string, 0, len(k.keys))
	for id := range k.keys {
		ids = append(ids, KeyID(id))
	}
	sort.Strings(ids)
	return ids
}

// Verify checks that sig is a valid minisign signature of message by a
// trusted key and returns that key's file. The refusal wraps ErrUnknownKey
// (the key the signature names is not trusted) or ErrBadSignature.
func (k *Keyring) Verify(message, sig []byte) (keyFile string, err error) {
	var s minisign.Signature
	if err := s.UnmarshalText(sig); err != nil {
		return "", fmt.Errorf("%w: %s is not a minisign signature: %v", ErrBadSignature, SignatureFile, err)
	}
	tk, ok := k.keys[s.KeyID]
	if !ok {
		return "", fmt.Errorf("%w: %s is signed by key %s, which is not among the trusted keys in %q (%s)",
			ErrUnknownKey, ManifestFile, KeyID(s.KeyID), k.dir, strings.Join(k.IDs(), ", "))
	}
	if !minisign.Verify(tk.key, message, sig) {
		return "", fmt.Errorf("%w: %s does not match its signature by key %s (%s)", ErrBadSignature, ManifestFile, KeyID(s.KeyID), tk.file)
	}
	return tk.file, nil
}

// Sign returns the minisign signature (the .minisig file's content) of
// message, prehashed, with trustedComment signed along.
func Sign(key minisign.PrivateKey, message []byte, trustedComment string) []byte {
	r := minisign.NewReader(bytes.NewReader(message))
	_, _ = io.Copy(io.Discard, r)
	untrusted := "signature from fieldgate secret key " + KeyID(key.ID())
	return r.SignWithComments(key, trustedComment, untrusted)
}

// TrustedComment is the signed comment fieldgate puts on a manifest
// signature: the time and the file, as minisign writes it.
func TrustedComment(now time.Time, file string) string {
	return fmt.Sprintf("timestamp:%d\tfile:%s\thashed", now.Unix(), filepath.Base(file))
}

// LoadPrivateKey reads a minisign secret key file (as written by
// `minisign -G` or `fieldgate bundle keygen`); an encrypted one needs its
// password.
func LoadPrivateKey(file, password string) (minisign.PrivateKey, error) {
	data, err := readBounded(file, maxKeyBytes, true)
	if err != nil {
		return minisign.PrivateKey{}, fmt.Errorf("secret key: %w", err)
	}
	data = bytes.TrimSpace(data)
	if minisign.IsEncrypted(data) {
		if password == "" {
			return minisign.PrivateKey{}, fmt.Errorf("secret key %q is encrypted: give its password (--password-file)", file)
		}
		key, err := minisign.DecryptKey(password, data)
		if err != nil {
			return minisign.PrivateKey{}, fmt.Errorf("secret key %q: wrong password or not a minisign key: %w", file, err)
		}
		return key, nil
	}
	var key minisign.PrivateKey
	if err := key.UnmarshalText(data); err != nil {
		return minisign.PrivateKey{}, fmt.Errorf("secret key %q: %w", file, err)
	}
	return key, nil
}

// GenerateKey writes a new key pair: the secret key to keyFile (mode 0600,
// encrypted when password is set) and the public key to pubFile. Existing
// files are never overwritten.
func GenerateKey(keyFile, pubFile, password string) (minisign.PublicKey, error) {
	pub, priv, err := minisign.GenerateKey(rand.Reader)
	if err != nil {
		return pub, err
	}
	var secret []byte
	if password != "" {
		secret, err = minisign.EncryptKey(password, priv)
	} else {
		secret, err = priv.MarshalText()
	}
	if err != nil {
		return pub, err
	}
	pubText, _ := pub.MarshalText()
	if err := writeNew(keyFile, append(secret, '\n'), 0o600); err != nil {
		return pub, err
	}
	if err := writeNew(pubFile, append(pubText, '\n'), 0o644); err != nil {
		os.Remove(keyFile)
		return pub, err
	}
	return pub, nil
}

// writeNew creates path with data and syncs it, failing if it exists (or
// is a symlink); a partly written file is removed.
func writeNew(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|noFollow, mode)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
	}
	return err
}

// readBounded reads at most max bytes of a regular file (following a
// symlink at its last component only when follow is set); a larger file is
// an error.
func readBounded(p string, max int64, follow bool) ([]byte, error) {
	var (
		f   *os.File
		err error
	)
	if follow {
		f, err = os.Open(p)
	} else {
		f, err = openNoFollow(p)
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	if int64(len(data)) > max {
		return nil, fmt.Errorf("%s: larger than %d bytes", p, max)
	}
	return data, nil
}

// WriteManifest writes dir/manifest.json for the files under dir
// (NewManifest) and returns it.
func WriteManifest(dir string, info ManifestInfo) (*Manifest, error) {
	m, err := NewManifest(dir, info)
	if err != nil {
		return nil, err
	}
	data, err := m.Marshal()
	if err != nil {
		return nil, err
	}
	if err := writeFileAtomic(filepath.Join(dir, ManifestFile), data, 0o644); err != nil {
		return nil, fmt.Errorf("write manifest: %w", err)
	}
	return m, nil
}

// SignFile writes file.minisig, the minisign signature of file by key.
func SignFile(file string, key minisign.PrivateKey, now time.Time) error {
	data, err := readBounded(file, maxManifestBytes, false)
	if err != nil {
		return err
	}
	sig := Sign(key, data, TrustedComment(now, file))
	if err := writeFileAtomic(file+".minisig", sig, 0o644); err != nil {
		return fmt.Errorf("write signature: %w", err)
	}
	return nil
}
