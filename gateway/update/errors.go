package update

import (
	"errors"
	"syscall"
)

// Reasons a bundle is refused. Every refusal wraps one of these, with the
// details (which key, which file, which versions) in its message, and
// changes nothing: the running version keeps running.
var (
	// ErrBadSignature: the manifest's signature does not verify with the
	// trusted key it names (or the signature file is malformed or missing).
	ErrBadSignature = errors.New("bad signature")
	// ErrUnknownKey: the manifest is signed by a key that is not trusted.
	ErrUnknownKey = errors.New("unknown key")
	// ErrHashMismatch: a file differs from what the manifest says.
	ErrHashMismatch = errors.New("hash mismatch")
	// ErrUnlisted: the bundle holds a file the manifest does not list, or
	// lacks one it does, or holds something other than regular files.
	ErrUnlisted = errors.New("bundle does not match its manifest")
	// ErrDowngrade: the bundle's version is not newer than the running one.
	ErrDowngrade = errors.New("downgrade")
	// ErrWrongArchitecture: the bundle is built for another platform.
	ErrWrongArchitecture = errors.New("wrong architecture")
	// ErrMalformed: the manifest cannot be read or breaks its format.
	ErrMalformed = errors.New("malformed manifest")
	// ErrOnTrial: another version is on trial; it must commit or roll back
	// before the next update.
	ErrOnTrial = errors.New("an update is on trial")
	// ErrNoKeys: no trusted key is installed.
	ErrNoKeys = errors.New("no trusted keys")
)

// noFollow makes open fail on a symlink.
const noFollow = syscall.O_NOFOLLOW
