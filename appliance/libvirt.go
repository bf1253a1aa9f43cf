package appliance

import (
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	"golang.org/x/crypto/ssh"

	"github.com/rackboot/rackboot/hypervisor"
	"github.com/rackboot/rackboot/hypervisor/libvirt"
	"github.com/rackboot/rackboot/internal/atomicfile"
	"github.com/rackboot/rackboot/internal/tlspin"
)

// LibvirtDir holds, in the data dir, what rackboot proves itself with to
// hypervisors' libvirt daemons: for qemu+tls, cacert.pem (the CA of the
// daemons' certificates), clientcert.pem and clientkey.pem (libvirt's own
// file names); for qemu+ssh, id_ed25519 (the key rackboot logs in with)
// and known_hosts (the hypervisors' host keys, pinned). Each is optional;
// a URI whose transport lacks its files fails when dialled.
const LibvirtDir = "libvirt"

// libvirtPKI is rackboot's own CA for hypervisors (LibvirtDir's ca.pem and
// ca-key.pem), made on first start with rackboot's client certificate and,
// where the operator put no other, cacert.pem. A node deployed with role
// hypervisor gets a server certificate from it. An operator's own files
// are never replaced.
func libvirtPKI(dataDir string) (*tlspin.CA, error) {
	dir := filepath.Join(dataDir, LibvirtDir)
	ca, err := tlspin.LoadOrCreateCA(dir, "ca", "rackboot libvirt CA")
	if err != nil {
		return nil, fmt.Errorf("libvirt credentials: %w", err)
	}
	exists := func(name string) bool {
		_, err := os.Stat(filepath.Join(dir, name))
		return err == nil
	}
	if !exists("cacert.pem") {
		if err := atomicfile.WriteMode(filepath.Join(dir, "cacert.pem"), ca.PEM(), 0o644); err != nil {
			return nil, fmt.Errorf("libvirt credentials: %w", err)
		}
	}
	if !exists("clientcert.pem") {
		cert, key, err := ca.Issue(libvirtClientCN, nil, true)
		if err != nil {
			return nil, fmt.Errorf("libvirt credentials: %w", err)
		}
		if err := atomicfile.WriteMode(filepath.Join(dir, "clientkey.pem"), key, 0o600); err != nil {
			return nil, fmt.Errorf("libvirt credentials: %w", err)
		}
		if err := atomicfile.WriteMode(filepath.Join(dir, "clientcert.pem"), cert, 0o644); err != nil {
			return nil, fmt.Errorf("libvirt credentials: %w", err)
		}
	}
	return ca, nil
}

const libvirtClientCN = "rackboot"

// hypervisorTLS issues a hypervisor's libvirt TLS files from ca. It
// refuses when the operator's cacert.pem does not trust ca, or the client
// certificate is not ca's: the hypervisor would then refuse rackboot, or
// rackboot the hypervisor.
func hypervisorTLS(dataDir string, ca *tlspin.CA) func(hosts []string) (hypervisor.TLSFiles, error) {
	return func(hosts []string) (hypervisor.TLSFiles, error) {
		dir := filepath.Join(dataDir, LibvirtDir)
		trust, err := os.ReadFile(filepath.Join(dir, "cacert.pem"))
		if err != nil {
			return hypervisor.TLSFiles{}, fmt.Errorf("hypervisor certificate: %w", err)
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(trust)
		client, err := tls.LoadX509KeyPair(filepath.Join(dir, "clientcert.pem"), filepath.Join(dir, "clientkey.pem"))
		if err != nil {
			return hypervisor.TLSFiles{}, fmt.Errorf("hypervisor certificate: %w", err)
		}
		leaf, err := x509.ParseCertificate(client.Certificate[0])
		if err != nil {
			return hypervisor.TLSFiles{}, fmt.Errorf("hypervisor certificate: %w", err)
		}
		if _, err := ca.Cert.Verify(x509.VerifyOptions{Roots: pool}); err != nil {
			return hypervisor.TLSFiles{}, fmt.Errorf("hypervisor certificate: %s does not trust rackboot's libvirt CA (%s): %w", filepath.Join(dir, "cacert.pem"), filepath.Join(dir, "ca.pem"), err)
		}
		if leaf.CheckSignatureFrom(ca.Cert) != nil {
			return hypervisor.TLSFiles{}, fmt.Errorf("hypervisor certificate: %s is not from rackboot's libvirt CA, which the hypervisor would trust", filepath.Join(dir, "clientcert.pem"))
		}
		cert, key, err := ca.Issue(hosts[0], hosts, false)
		if err != nil {
			return hypervisor.TLSFiles{}, fmt.Errorf("hypervisor certificate: %w", err)
		}
		dn, err := libvirtDN(leaf)
		if err != nil {
			return hypervisor.TLSFiles{}, fmt.Errorf("hypervisor certificate: %w", err)
		}
		return hypervisor.TLSFiles{CACert: ca.PEM(), ServerCert: cert, ServerKey: key, ClientDN: dn}, nil
	}
}

// libvirtDN is a certificate's subject as libvirtd compares it with
// tls_allowed_dn_list: GnuTLS writes the attributes in the order the
// certificate holds them ("O=rackboot,CN=rackboot"), where Go's String
// reverses them.
func libvirtDN(c *x509.Certificate) (string, error) {
	var seq pkix.RDNSequence
	if _, err := asn1.Unmarshal(c.RawSubject, &seq); err != nil {
		return "", fmt.Errorf("subject: %w", err)
	}
	slices.Reverse(seq)
	return seq.String(), nil
}

// libvirtOptions reads the files of LibvirtDir that are there.
func libvirtOptions(dataDir string) (libvirt.Options, error) {
	dir := filepath.Join(dataDir, LibvirtDir)
	read := func(name string) ([]byte, error) {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("libvirt credentials: %w", err)
		}
		return b, nil
	}
	var opt libvirt.Options
	ca, err := read("cacert.pem")
	if err != nil {
		return opt, err
	}
	if ca != nil {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(ca) {
			return opt, fmt.Errorf("libvirt credentials: %s holds no PEM certificate", filepath.Join(dir, "cacert.pem"))
		}
		opt.TLS = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		if _, err := os.Stat(filepath.Join(dir, "clientcert.pem")); err == nil {
			cert, err := tls.LoadX509KeyPair(filepath.Join(dir, "clientcert.pem"), filepath.Join(dir, "clientkey.pem"))
			if err != nil {
				return opt, fmt.Errorf("libvirt credentials: %w", err)
			}
			opt.TLS.Certificates = []tls.Certificate{cert}
		}
	}
	key, err := read("id_ed25519")
	if err != nil {
		return opt, err
	}
	if key != nil {
		if opt.SSHKey, err = ssh.ParsePrivateKey(key); err != nil {
			return opt, fmt.Errorf("libvirt credentials: %s: %w", filepath.Join(dir, "id_ed25519"), err)
		}
	}
	if opt.SSHKnownHosts, err = read("known_hosts"); err != nil {
		return opt, err
	}
	return opt, nil
}
