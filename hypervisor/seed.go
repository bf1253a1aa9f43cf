package hypervisor

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
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

// Agent is how a hypervisor's agent (rackboot-agent hypervisor) is
// installed: its binary, fetched from rackboot and checked against its
// SHA-256 before it runs, its configuration line and its token.
type Agent struct {
	// BinaryURL serves the static agent for the node's architecture.
	BinaryURL string
	SHA256    string
	// Config is the agent's configuration, one line in the kernel
	// command line's form: rackboot.api=URL rackboot.node=ID, and
	// rackboot.files= and rackboot.ca= where the API needs them.
	Config string
	// Token is the hypervisor token the agent proves itself with.
	Token string
}

// Where a hypervisor's agent and its files go.
const (
	AgentBinaryPath = "/usr/local/sbin/rackboot-agent"
	AgentConfigPath = "/etc/rackboot/hypervisor.conf"
	AgentTokenPath  = "/etc/rackboot/hypervisor.token"
	AgentStatePath  = "/var/lib/rackboot/hypervisor-agent.json"
	AgentUnit       = "rackboot-agent-hypervisor.service"
	AgentUnitPath   = "/etc/systemd/system/" + AgentUnit
)

// agentUnit runs the agent after the NVIDIA driver's own services: MIG
// and vGPU need the driver loaded, and nvidia-persistenced keeps it so.
const agentUnit = `[Unit]
Description=rackboot hypervisor agent: applies this host's GPU layout and its VMs' devices
Wants=network-online.target
After=network-online.target nvidia-persistenced.service nvidia-vgpud.service nvidia-vgpu-mgr.service
# A download that failed its checksum left no binary: nothing to restart.
ConditionFileIsExecutable=` + AgentBinaryPath + `

[Service]
ExecStart=` + AgentBinaryPath + ` hypervisor --config ` + AgentConfigPath + ` --token-file ` + AgentTokenPath + ` --state-file ` + AgentStatePath + `
Restart=always
RestartSec=10

[Install]
WantedBy=multi-user.target
`

var (
	sha256Hex  = regexp.MustCompile(`^[0-9a-f]{64}$`)
	agentToken = regexp.MustCompile(`^[A-Za-z0-9_-]{16,128}$`)
)

func (a Agent) check() error {
	u, err := url.Parse(a.BinaryURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || strings.ContainsAny(a.BinaryURL, "'\"\n\\ $`") {
		return fmt.Errorf("hypervisor seed: agent URL %q", a.BinaryURL)
	}
	if !sha256Hex.MatchString(a.SHA256) {
		return fmt.Errorf("hypervisor seed: agent SHA-256 %q", a.SHA256)
	}
	if a.Config == "" || strings.ContainsAny(a.Config, "\n\r") {
		return fmt.Errorf("hypervisor seed: agent config %q", a.Config)
	}
	if !agentToken.MatchString(a.Token) {
		return errors.New("hypervisor seed: agent token malformed")
	}
	return nil
}

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
// other, and libvirtd's TLS socket enabled; and rackboot's hypervisor
// agent, fetched from rackboot, checked and run as a systemd service. The
// image must carry libvirt-daemon-system, QEMU, and curl or wget.
func CloudConfig(hostname string, sshKeys []string, t TLSFiles, a Agent) (string, error) {
	if err := CheckSeed(hostname, sshKeys); err != nil {
		return "", err
	}
	if len(t.CACert) == 0 || len(t.ServerCert) == 0 || len(t.ServerKey) == 0 {
		return "", errors.New("hypervisor seed: TLS files missing")
	}
	if t.ClientDN == "" || strings.ContainsAny(t.ClientDN, "\"\n\\") {
		return "", fmt.Errorf("hypervisor seed: client DN %q", t.ClientDN)
	}
	if err := a.check(); err != nil {
		return "", err
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
			{Path: AgentConfigPath, Permissions: "0644", Content: a.Config + "\n"},
			{Path: AgentTokenPath, Permissions: "0600", Content: a.Token + "\n"},
			{Path: AgentUnitPath, Permissions: "0644", Content: agentUnit},
		},
		RunCmd: [][]string{
			{"systemctl", "enable", "--now", "libvirtd-tls.socket"},
			// The agent is checked before it is put where the unit runs
			// it: a download cut short or changed on the way never runs.
			{"sh", "-c", fmt.Sprintf("set -e; f=%[1]s.new; rm -f \"$f\"; "+
				"if command -v curl >/dev/null; then curl -fsS --retry 5 --retry-connrefused -o \"$f\" '%[2]s'; else wget -q -t 5 -O \"$f\" '%[2]s'; fi; "+
				"echo '%[3]s  '\"$f\" | sha256sum -c --quiet -; chmod 0755 \"$f\"; mv -f \"$f\" %[1]s", AgentBinaryPath, a.BinaryURL, a.SHA256)},
			{"systemctl", "daemon-reload"},
			{"systemctl", "enable", "--now", AgentUnit},
		},
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
