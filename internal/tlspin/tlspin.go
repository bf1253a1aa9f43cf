// Package tlspin is how rackboot's API is served over TLS and how its
// clients trust it without a public CA: the appliance keeps a CA of its
// own in DATA_DIR/tls and a server certificate it signs, and clients pin
// the CA's SHA-256 fingerprint ("sha256:HEX"). The agent gets the pin on
// its kernel command line and checks the chain against it, never against
// validity dates: a freshly booted node has no trustworthy clock. Because
// the pin names the CA, the server certificate can be reissued (a new
// address, a renewal) without breaking a running agent. An operator's own
// certificate works the same way, pinned by the root-most certificate of
// the chain it is given with.
package tlspin

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Files in the TLS dir.
const (
	CAFile   = "ca.pem"
	caKey    = "ca.key"
	certFile = "server.pem"
	keyFile  = "server.key"
)

// Bundle is what a TLS server needs: the certificate it presents (leaf
// first, then its chain) and the pins clients check it by.
type Bundle struct {
	Cert tls.Certificate
	// Pins are the fingerprints clients may pin, the current anchor first.
	Pins []string
}

// ServerConfig is a TLS 1.2+ server configuration presenting b.
func (b Bundle) ServerConfig() *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{b.Cert}, MinVersion: tls.VersionTLS12}
}

// Fingerprint is the pin of a DER certificate: "sha256:" and its hex hash.
func Fingerprint(der []byte) string {
	h := sha256.Sum256(der)
	return "sha256:" + hex.EncodeToString(h[:])
}

// ParsePins reads a comma-separated list of pins, as the kernel command
// line and the CLI spell them.
func ParsePins(s string) ([]string, error) {
	var out []string
	for _, p := range strings.Split(s, ",") {
		p = strings.ToLower(strings.TrimSpace(p))
		if p == "" {
			continue
		}
		h, ok := strings.CutPrefix(p, "sha256:")
		if b, err := hex.DecodeString(strings.ReplaceAll(h, ":", "")); !ok || err != nil || len(b) != sha256.Size {
			return nil, fmt.Errorf("pin %q: want sha256: and 64 hex digits", p)
		}
		out = append(out, "sha256:"+strings.ReplaceAll(h, ":", ""))
	}
	if len(out) == 0 {
		return nil, errors.New("no pin given")
	}
	return out, nil
}

// Generated returns the appliance's own CA and server certificate from
// dir, making either on first start. The server certificate is reissued
// (by the same CA, so pins hold) when it does not name every one of
// hosts or expires within 30 days.
func Generated(dir string, hosts []string) (Bundle, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return Bundle{}, fmt.Errorf("tls dir: %w", err)
	}
	ca, caPriv, err := loadPair(filepath.Join(dir, CAFile), filepath.Join(dir, caKey))
	if errors.Is(err, os.ErrNotExist) {
		ca, caPriv, err = newCA(dir)
	}
	if err != nil {
		return Bundle{}, fmt.Errorf("tls ca: %w", err)
	}
	leaf, leafPriv, err := loadPair(filepath.Join(dir, certFile), filepath.Join(dir, keyFile))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return Bundle{}, fmt.Errorf("tls server certificate: %w", err)
	}
	if err != nil || !covers(leaf, hosts) || time.Until(leaf.NotAfter) < 30*24*time.Hour || leaf.CheckSignatureFrom(ca) != nil {
		if leaf, leafPriv, err = newLeaf(dir, ca, caPriv, hosts); err != nil {
			return Bundle{}, fmt.Errorf("tls server certificate: %w", err)
		}
	}
	return Bundle{
		Cert: tls.Certificate{Certificate: [][]byte{leaf.Raw, ca.Raw}, PrivateKey: leafPriv, Leaf: leaf},
		Pins: []string{Fingerprint(ca.Raw)},
	}, nil
}

// FromFiles loads an operator's certificate (PEM, leaf first, then the
// chain it should be trusted by) and key. The pin is the last
// certificate of the file: the CA when the chain is there, else the
// certificate itself.
func FromFiles(certPath, keyPath string) (Bundle, error) {
	c, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err != nil {
		return Bundle{}, fmt.Errorf("tls certificate %s: %w", certPath, err)
	}
	return Bundle{Cert: c, Pins: []string{Fingerprint(c.Certificate[len(c.Certificate)-1])}}, nil
}

// WriteCA writes the anchor of b's chain (what its first pin names) as
// PEM to path, mode 0644: a client on the appliance may trust it.
func WriteCA(path string, b Bundle) error {
	for _, der := range b.Cert.Certificate {
		if Fingerprint(der) == b.Pins[0] {
			return writeFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
		}
	}
	return fmt.Errorf("tls: no certificate of the chain has pin %s", b.Pins[0])
}

func covers(c *x509.Certificate, hosts []string) bool {
	for _, h := range hosts {
		if c.VerifyHostname(h) != nil {
			return false
		}
	}
	return true
}

func loadPair(certPath, keyPath string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	cb, err := os.ReadFile(certPath)
	if err != nil {
		return nil, nil, err
	}
	kb, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, nil, err
	}
	cblock, _ := pem.Decode(cb)
	kblock, _ := pem.Decode(kb)
	if cblock == nil || kblock == nil {
		return nil, nil, fmt.Errorf("%s or %s: not PEM", certPath, keyPath)
	}
	c, err := x509.ParseCertificate(cblock.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", certPath, err)
	}
	k, err := x509.ParseECPrivateKey(kblock.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", keyPath, err)
	}
	if !k.PublicKey.Equal(c.PublicKey) {
		return nil, nil, fmt.Errorf("%s does not belong to %s", keyPath, certPath)
	}
	return c, k, nil
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n
}

func newCA(dir string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	host, _ := os.Hostname()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "rackboot CA " + host, Organization: []string{"rackboot"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().AddDate(20, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	return issue(dir, CAFile, caKey, tmpl, nil, nil, k)
}

func newLeaf(dir string, ca *x509.Certificate, caPriv *ecdsa.PrivateKey, hosts []string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: "rackboot", Organization: []string{"rackboot"}},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().AddDate(2, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		if a, err := netip.ParseAddr(h); err == nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, net.IP(a.AsSlice()))
		} else if h != "" && !slices.Contains(tmpl.DNSNames, h) {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	return issue(dir, certFile, keyFile, tmpl, ca, caPriv, k)
}

// issue signs tmpl (by parent, or itself), writes it and its key, and
// returns them parsed.
func issue(dir, certName, keyName string, tmpl, parent *x509.Certificate, parentKey, k *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	if parent == nil {
		parent, parentKey = tmpl, k
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &k.PublicKey, parentKey)
	if err != nil {
		return nil, nil, err
	}
	kder, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		return nil, nil, err
	}
	// The key first: a certificate without its key would be loaded and fail.
	if err := writeFile(filepath.Join(dir, keyName), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		return nil, nil, err
	}
	if err := writeFile(filepath.Join(dir, certName), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return nil, nil, err
	}
	c, err := x509.ParseCertificate(der)
	return c, k, err
}

// writeFile replaces path atomically, so a crash never leaves half a key.
func writeFile(path string, b []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// ErrPin is what a server whose chain matches no pin gets.
var ErrPin = errors.New("server certificate matches no pinned fingerprint")

// Verify checks a server's presented chain against pins for host: some
// certificate of the chain must have a pinned fingerprint, and the chain
// from the leaf up to it must verify (signatures, key usage, the host
// name) at a moment all of its certificates were valid, whatever the
// local clock says. A pinned leaf is trusted as it is.
func Verify(chain []*x509.Certificate, pins []string, host string) error {
	if len(chain) == 0 {
		return errors.New("server sent no certificate")
	}
	anchor := -1
	for i, c := range chain {
		fp := Fingerprint(c.Raw)
		if slices.ContainsFunc(pins, func(p string) bool { return subtle.ConstantTimeCompare([]byte(p), []byte(fp)) == 1 }) {
			anchor = i
			break
		}
	}
	if anchor < 0 {
		return fmt.Errorf("%w: it is %s, want %s", ErrPin, Fingerprint(chain[len(chain)-1].Raw), strings.Join(pins, " or "))
	}
	if anchor == 0 {
		return nil
	}
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	roots.AddCert(chain[anchor])
	at := chain[0].NotBefore
	end := chain[0].NotAfter
	for _, c := range chain[1 : anchor+1] {
		if c != chain[anchor] {
			inter.AddCert(c)
		}
		if c.NotBefore.After(at) {
			at = c.NotBefore
		}
		if c.NotAfter.Before(end) {
			end = c.NotAfter
		}
	}
	if at.After(end) {
		return errors.New("server certificate chain: its certificates were never valid at the same time")
	}
	_, err := chain[0].Verify(x509.VerifyOptions{DNSName: host, Roots: roots, Intermediates: inter,
		CurrentTime: at.Add(time.Second), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	if err != nil {
		return fmt.Errorf("server certificate: %w", err)
	}
	return nil
}

// ClientConfig is a TLS client configuration that trusts exactly the
// chains Verify accepts for pins.
func ClientConfig(pins []string) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		// The standard check wants a clock and a root store; Verify
		// replaces it, on every connection, resumed ones included.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			return Verify(cs.PeerCertificates, pins, cs.ServerName)
		},
	}
}

// CA is a certificate authority of the appliance kept in two files of a
// directory, for a trust domain of its own: the hypervisors' libvirt
// daemons and rackboot as their client trust it, and nothing else does,
// so a certificate it issues to a hypervisor never passes for the API.
type CA struct {
	Cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

// LoadOrCreateCA reads the CA NAME.pem and NAME-key.pem from dir, making
// it on first use with common name cn.
func LoadOrCreateCA(dir, name, cn string) (*CA, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("ca %s: %w", name, err)
	}
	certName, keyName := name+".pem", name+"-key.pem"
	c, k, err := loadPair(filepath.Join(dir, certName), filepath.Join(dir, keyName))
	if errors.Is(err, os.ErrNotExist) {
		if k, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			return nil, fmt.Errorf("ca %s: %w", name, err)
		}
		tmpl := &x509.Certificate{
			SerialNumber:          serial(),
			Subject:               pkix.Name{CommonName: cn, Organization: []string{"rackboot"}},
			NotBefore:             time.Now().Add(-time.Hour),
			NotAfter:              time.Now().AddDate(20, 0, 0),
			KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
			BasicConstraintsValid: true,
			IsCA:                  true,
			MaxPathLenZero:        true,
		}
		c, k, err = issue(dir, certName, keyName, tmpl, nil, nil, k)
	}
	if err != nil {
		return nil, fmt.Errorf("ca %s: %w", name, err)
	}
	if !c.IsCA {
		return nil, fmt.Errorf("ca %s: %s is not a CA certificate", name, filepath.Join(dir, certName))
	}
	return &CA{Cert: c, key: k}, nil
}

// PEM is the CA's certificate.
func (c *CA) PEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Cert.Raw})
}

// Issue signs a new key's certificate for a server named by hosts (DNS
// names or addresses) or, with client, for a client; it returns both as
// PEM and writes nothing. Key encipherment is in the key usage beside the
// signature, which GnuTLS (libvirt's TLS) wants of every certificate,
// ECDSA ones too.
func (c *CA) Issue(cn string, hosts []string, client bool) (certPEM, keyPEM []byte, err error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: cn, Organization: []string{"rackboot"}},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().AddDate(5, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if client {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	for _, h := range hosts {
		if a, err := netip.ParseAddr(h); err == nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, net.IP(a.AsSlice()))
		} else if h != "" && !slices.Contains(tmpl.DNSNames, h) {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.Cert, &k.PublicKey, c.key)
	if err != nil {
		return nil, nil, err
	}
	kder, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), nil
}
