package opcua

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/gopcua/opcua/ua"
)

// policyURI maps a configured policy name to its URI.
func policyURI(name string) string { return ua.SecurityPolicyURIPrefix + name }

// policyName is the short name of a policy URI ("Basic256Sha256").
func policyName(uri string) string { return strings.TrimPrefix(uri, ua.SecurityPolicyURIPrefix) }

func secMode(name string) ua.MessageSecurityMode {
	switch name {
	case SecModeSign:
		return ua.MessageSecurityModeSign
	case SecModeSignAndEncrypt:
		return ua.MessageSecurityModeSignAndEncrypt
	}
	return ua.MessageSecurityModeNone
}

func secModeName(m ua.MessageSecurityMode) string {
	switch m {
	case ua.MessageSecurityModeNone:
		return SecModeNone
	case ua.MessageSecurityModeSign:
		return SecModeSign
	case ua.MessageSecurityModeSignAndEncrypt:
		return SecModeSignAndEncrypt
	}
	return m.String()
}

// preference ranks the policies this collector speaks when it chooses an
// endpoint itself: higher is better.
var preference = map[string]int{
	PolicyAes256Sha256RsaPss:  3,
	PolicyBasic256Sha256:      2,
	PolicyAes128Sha256RsaOaep: 1,
}

func describeEndpoints(eps []*ua.EndpointDescription) string {
	var s []string
	for _, e := range eps {
		s = append(s, policyName(e.SecurityPolicyURI)+"/"+secModeName(e.SecurityMode))
	}
	sort.Strings(s)
	return strings.Join(s, ", ")
}

// selectEndpoint picks the endpoint matching sec, or, when sec is nil, the
// most secure SignAndEncrypt endpoint among the supported policies (by
// the collector's policy preference, then the server's security level).
// Security None is never chosen implicitly.
func selectEndpoint(eps []*ua.EndpointDescription, sec *Security) (*ua.EndpointDescription, error) {
	if sec != nil {
		uri, mode := policyURI(sec.Policy), secMode(sec.Mode)
		var best *ua.EndpointDescription
		for _, e := range eps {
			if e.SecurityPolicyURI == uri && e.SecurityMode == mode && (best == nil || e.SecurityLevel > best.SecurityLevel) {
				best = e
			}
		}
		if best == nil {
			return nil, fmt.Errorf("server offers no endpoint with security %s/%s (offered: %s)", sec.Policy, sec.Mode, describeEndpoints(eps))
		}
		return best, nil
	}
	var best *ua.EndpointDescription
	for _, e := range eps {
		p := preference[policyName(e.SecurityPolicyURI)]
		if p == 0 || e.SecurityMode != ua.MessageSecurityModeSignAndEncrypt {
			continue
		}
		if best == nil {
			best = e
			continue
		}
		bp := preference[policyName(best.SecurityPolicyURI)]
		if p > bp || (p == bp && e.SecurityLevel > best.SecurityLevel) {
			best = e
		}
	}
	if best == nil {
		return nil, fmt.Errorf("server offers no SignAndEncrypt endpoint with a supported policy (offered: %s); to connect without security, choose policy None explicitly (collector file: security: {policy: None, mode: None}; browse: --policy None)", describeEndpoints(eps))
	}
	return best, nil
}

// certInfo describes a certificate for messages: subject and SHA-1
// thumbprint (the form OPC UA tools show).
func certInfo(der []byte) (subject, thumb string) {
	sum := sha1.Sum(der)
	thumb = strings.ToUpper(hex.EncodeToString(sum[:]))
	subject = "(unparsable certificate)"
	if c, err := x509.ParseCertificate(der); err == nil {
		subject = c.Subject.String()
	}
	return subject, thumb
}

// UntrustedCertError reports a server certificate that is not in the trust
// directory.
type UntrustedCertError struct {
	Subject, Thumbprint string
	SavedAs             string // the rejected certificate's copy, "" if it could not be saved
	TrustDir            string
}

func (e *UntrustedCertError) Error() string {
	msg := fmt.Sprintf("untrusted server certificate %q (SHA-1 thumbprint %s)", e.Subject, e.Thumbprint)
	if e.SavedAs != "" {
		return msg + fmt.Sprintf(": to trust it, move %s into %s", e.SavedAs, e.TrustDir)
	}
	return msg + fmt.Sprintf(": to trust it, put the server's certificate (DER or PEM) into %s", e.TrustDir)
}

// trustStore checks server certificates against the certificate files of a
// directory (any name, DER or PEM) and an optional pinned certificate.
// Untrusted certificates are saved into rejectedDir for the engineer to move.
type trustStore struct {
	dir         string
	rejectedDir string
	pinned      []byte
}

func (t *trustStore) check(der []byte) error {
	if len(der) == 0 {
		return errors.New("server sent no certificate on a secured endpoint")
	}
	if t.pinned != nil && string(t.pinned) == string(der) {
		return nil
	}
	entries, err := os.ReadDir(t.dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("read trust directory %q: %w", t.dir, err)
	}
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		certs, err := readCerts(filepath.Join(t.dir, e.Name()))
		if err != nil {
			continue // not a certificate: README, notes, ...
		}
		for _, c := range certs {
			if string(c) == string(der) {
				return nil
			}
		}
	}
	subject, thumb := certInfo(der)
	ue := &UntrustedCertError{Subject: subject, Thumbprint: thumb, TrustDir: t.dir}
	if t.rejectedDir != "" {
		name := filepath.Join(t.rejectedDir, thumb+".der")
		if err := os.MkdirAll(t.rejectedDir, 0o755); err == nil {
			if err := os.WriteFile(name, der, 0o644); err == nil {
				ue.SavedAs = name
			}
		}
	}
	return ue
}

// readCerts reads the certificates of a PEM or DER file, as DER.
func readCerts(path string) ([][]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out [][]byte
	rest := b
	for {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		if blk.Type == "CERTIFICATE" {
			out = append(out, blk.Bytes)
		}
	}
	if len(out) > 0 {
		return out, nil
	}
	if _, err := x509.ParseCertificate(b); err != nil {
		return nil, fmt.Errorf("%s: not a PEM or DER certificate", path)
	}
	return [][]byte{b}, nil
}

// readKey reads an RSA private key from a PEM (PKCS#1 or PKCS#8) or DER file.
func readKey(path string) (*rsa.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	der := b
	if blk, _ := pem.Decode(b); blk != nil {
		der = blk.Bytes
	}
	if k, err := x509.ParsePKCS1PrivateKey(der); err == nil {
		return k, nil
	}
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("%s: not an RSA private key (PEM or DER, PKCS#1 or PKCS#8)", path)
	}
	rk, ok := k.(*rsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%s: key is %T, OPC UA needs RSA", path, k)
	}
	return rk, nil
}

// keyPair is a certificate (DER) with its private key.
type keyPair struct {
	cert []byte
	key  *rsa.PrivateKey
}

func loadKeyPair(certFile, keyFile string) (keyPair, error) {
	certs, err := readCerts(certFile)
	if err != nil {
		return keyPair{}, fmt.Errorf("certificate %q: %w", certFile, err)
	}
	key, err := readKey(keyFile)
	if err != nil {
		return keyPair{}, fmt.Errorf("private key %q: %w", keyFile, err)
	}
	c, err := x509.ParseCertificate(certs[0])
	if err != nil {
		return keyPair{}, fmt.Errorf("certificate %q: %w", certFile, err)
	}
	pub, ok := c.PublicKey.(*rsa.PublicKey)
	if !ok || pub.N.Cmp(key.N) != 0 {
		return keyPair{}, fmt.Errorf("certificate %q does not belong to private key %q", certFile, keyFile)
	}
	return keyPair{cert: certs[0], key: key}, nil
}

// ownCertificate returns the client's application instance certificate:
// the configured one, else the one generated earlier into dir
// (DATA_DIR/pki/own), else a new one (RSA 2048, application URI appURI in
// the subject alternative names, as OPC UA requires) written there.
func ownCertificate(sec *Security, dir, appURI string) (keyPair, error) {
	if sec != nil && sec.CertFile != "" {
		return loadKeyPair(sec.CertFile, sec.KeyFile)
	}
	certFile := filepath.Join(dir, "cert.der")
	keyFile := filepath.Join(dir, "private", "key.pem")
	if _, err := os.Stat(certFile); err == nil {
		return loadKeyPair(certFile, keyFile)
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return keyPair{}, fmt.Errorf("generate client key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return keyPair{}, fmt.Errorf("generate certificate serial: %w", err)
	}
	uri, err := url.Parse(appURI)
	if err != nil {
		return keyPair{}, fmt.Errorf("application uri %q: %w", appURI, err)
	}
	host, _ := os.Hostname()
	now := time.Now()
	tmpl := x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "fieldgate opcua-collector", Organization: []string{"fieldgate"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.AddDate(20, 0, 0), // gateways run offline for years
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment |
			x509.KeyUsageKeyEncipherment | x509.KeyUsageDataEncipherment | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		URIs:                  []*url.URL{uri},
	}
	if host != "" {
		tmpl.DNSNames = []string{host}
	}
	der, err := x509.CreateCertificate(rand.Reader, &tmpl, &tmpl, &key.PublicKey, key)
	if err != nil {
		return keyPair{}, fmt.Errorf("create client certificate: %w", err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "private"), 0o700); err != nil {
		return keyPair{}, fmt.Errorf("create %q: %w", dir, err)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	// Key first: a certificate without its key would be unusable next time.
	if err := writeFileAtomic(keyFile, keyPEM, 0o600); err != nil {
		return keyPair{}, err
	}
	if err := writeFileAtomic(certFile, der, 0o644); err != nil {
		return keyPair{}, err
	}
	return keyPair{cert: der, key: key}, nil
}

func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, perm); err != nil {
		return fmt.Errorf("write %q: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %q: %w", path, err)
	}
	return nil
}
