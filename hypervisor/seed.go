package hypervisor

import (
	"errors"
	"fmt"
	"strings"

	"gopkg.in/yaml.v3"
)

// TLSFiles are what a hypervisor's libvirtd needs to serve qemu+tls to
// rackboot: the CA that signs both sides, the daemon's certificate and
// key, and the subject of rackboot's client certificate, the only one the
// daemon lets in.
type TLSFiles struct {
	CACert, ServerCert, ServerKey []byte
	ClientDN                      string
}

// Where Debian's and Ubuntu's libvirt read their TLS files by default.
const (
	CACertPath     = "/etc/pki/CA/cacert.pem"
	ServerCertPath = "/etc/pki/libvirt/servercert.pem"
	ServerKeyPath  = "/etc/pki/libvirt/private/serverkey.pem"
	LibvirtdConf   = "/etc/libvirt/libvirtd.conf"
)

type writeFile struct {
	Path        string `yaml:"path"`
	Permissions string `yaml:"permissions"`
	Content     string `yaml:"content"`
	Append      bool   `yaml:"append,omitempty"`
}

type cloudConfig struct {
	Hostname   string      `yaml:"hostname"`
	SSHKeys    []string    `yaml:"ssh_authorized_keys,omitempty"`
	WriteFiles []writeFile `yaml:"write_files"`
	RunCmd     [][]string  `yaml:"runcmd"`
}

// CloudConfig is the #cloud-config of a node deployed as a hypervisor: its
// hostname and SSH keys as any deploy's, the libvirt TLS files, a
// tls_allowed_dn_list that admits rackboot's client certificate and no
// other, and libvirtd's TLS socket enabled. The image must carry
// libvirt-daemon-system and QEMU.
func CloudConfig(hostname string, sshKeys []string, t TLSFiles) (string, error) {
	if err := CheckSeed(hostname, sshKeys); err != nil {
		return "", err
	}
	if len(t.CACert) == 0 || len(t.ServerCert) == 0 || len(t.ServerKey) == 0 {
		return "", errors.New("hypervisor seed: TLS files missing")
	}
	if t.ClientDN == "" || strings.ContainsAny(t.ClientDN, "\"\n\\") {
		return "", fmt.Errorf("hypervisor seed: client DN %q", t.ClientDN)
	}
	c := cloudConfig{
		Hostname: hostname,
		SSHKeys:  sshKeys,
		WriteFiles: []writeFile{
			{Path: CACertPath, Permissions: "0644", Content: string(t.CACert)},
			{Path: ServerCertPath, Permissions: "0644", Content: string(t.ServerCert)},
			{Path: ServerKeyPath, Permissions: "0600", Content: string(t.ServerKey)},
			// The last setting of a key wins in libvirtd.conf.
			{Path: LibvirtdConf, Permissions: "0644", Append: true, Content: "# rackboot: only rackboot's client certificate may use qemu+tls\n" + AllowedDNLine(t.ClientDN)},
		},
		RunCmd: [][]string{{"systemctl", "enable", "--now", "libvirtd-tls.socket"}},
	}
	var b strings.Builder
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(c); err != nil {
		return "", fmt.Errorf("hypervisor seed: %w", err)
	}
	return "#cloud-config\n" + b.String(), nil
}

// CheckSeed refuses a hostname or SSH key a seed cannot carry: what the
// API checks before it has a key made for the hypervisor.
func CheckSeed(hostname string, sshKeys []string) error {
	if hostname == "" || strings.ContainsAny(hostname, " \n\t:") {
		return fmt.Errorf("hypervisor seed: hostname %q", hostname)
	}
	for _, k := range sshKeys {
		if strings.ContainsAny(strings.TrimSpace(k), "\n\r") || strings.TrimSpace(k) == "" {
			return errors.New("hypervisor seed: an SSH key spans lines or is empty")
		}
	}
	return nil
}

// AllowedDNLine is the libvirtd.conf line that admits only dn.
func AllowedDNLine(dn string) string { return fmt.Sprintf("tls_allowed_dn_list = [\"%s\"]\n", dn) }
