package hypervisor_test

import (
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/rackboot/rackboot/hypervisor"
)

var update = flag.Bool("update", false, "rewrite the golden files")

func TestCloudConfig(t *testing.T) {
	files := hypervisor.TLSFiles{
		CACert:     []byte("-----BEGIN CERTIFICATE-----\nCA\n-----END CERTIFICATE-----\n"),
		ServerCert: []byte("-----BEGIN CERTIFICATE-----\nSERVER\n-----END CERTIFICATE-----\n"),
		ServerKey:  []byte("-----BEGIN EC PRIVATE KEY-----\nKEY\n-----END EC PRIVATE KEY-----\n"),
		ClientDN:   "O=rackboot,CN=rackboot",
	}
	agent := hypervisor.Agent{
		BinaryURL: "http://10.0.0.1:8080/agent/x86_64/rackboot-agent",
		SHA256:    strings.Repeat("ab", 32),
		Config:    "rackboot.api=https://10.0.0.1:8443/api/v1 rackboot.node=n-7 rackboot.files=http://10.0.0.1:8080 rackboot.ca=sha256:" + strings.Repeat("cd", 32),
		Token:     "rbt_hypervisortoken0123456789",
	}
	got, err := hypervisor.CloudConfig("gpu-07", []string{"ssh-ed25519 AAAA ops@example"}, files, agent)
	if err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "hypervisor-seed.yaml")
	if *update {
		os.WriteFile(golden, []byte(got), 0o644)
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		t.Errorf("cloud-config differs from %s (-update rewrites it):\n%s", golden, got)
	}
	// It is YAML cloud-init reads, and the files come back byte for byte.
	var doc struct {
		WriteFiles []struct{ Path, Permissions, Content string } `yaml:"write_files"`
		RunCmd     [][]string                                    `yaml:"runcmd"`
	}
	if !strings.HasPrefix(got, "#cloud-config\n") || yaml.Unmarshal([]byte(got), &doc) != nil {
		t.Fatalf("not a cloud-config:\n%s", got)
	}
	byPath := map[string]string{}
	for _, f := range doc.WriteFiles {
		byPath[f.Path] = f.Content
		if (f.Path == hypervisor.ServerKeyPath || f.Path == hypervisor.AgentTokenPath) && f.Permissions != "0600" {
			t.Errorf("%s is %s", f.Path, f.Permissions)
		}
	}
	if byPath[hypervisor.ServerKeyPath] != string(files.ServerKey) || byPath[hypervisor.CACertPath] != string(files.CACert) {
		t.Errorf("files read back: %v", byPath)
	}
	if !strings.Contains(byPath[hypervisor.LibvirtdConf], `tls_allowed_dn_list = ["O=rackboot,CN=rackboot"]`) {
		t.Errorf("libvirtd.conf: %q", byPath[hypervisor.LibvirtdConf])
	}
	if byPath[hypervisor.AgentTokenPath] != agent.Token+"\n" || byPath[hypervisor.AgentConfigPath] != agent.Config+"\n" {
		t.Errorf("agent files read back: %q %q", byPath[hypervisor.AgentTokenPath], byPath[hypervisor.AgentConfigPath])
	}
	if !strings.Contains(byPath[hypervisor.AgentUnitPath], "ExecStart="+hypervisor.AgentBinaryPath+" hypervisor ") {
		t.Errorf("unit: %q", byPath[hypervisor.AgentUnitPath])
	}
	// The download is fetched, then checked, then moved into place.
	var fetch string
	for _, c := range doc.RunCmd {
		if len(c) == 3 && c[0] == "sh" {
			fetch = c[2]
		}
	}
	if i, j, k := strings.Index(fetch, agent.BinaryURL), strings.Index(fetch, "sha256sum -c"), strings.Index(fetch, "mv -f"); i < 0 || j < i || k < j {
		t.Errorf("agent fetch: %q", fetch)
	}
	if err := exec.Command("sh", "-n", "-c", fetch).Run(); err != nil {
		t.Errorf("agent fetch is not shell: %v: %q", err, fetch)
	}

	for _, tc := range []struct {
		name, host string
		keys       []string
		files      hypervisor.TLSFiles
	}{
		{"no hostname", "", nil, files},
		{"hostname with a newline", "a\nruncmd:", nil, files},
		{"key over two lines", "h", []string{"ssh-ed25519 A\nruncmd: [reboot]"}, files},
		{"no key file", "h", nil, hypervisor.TLSFiles{CACert: files.CACert, ServerCert: files.ServerCert, ClientDN: "CN=x"}},
		{"a DN that leaves its quotes", "h", nil, hypervisor.TLSFiles{CACert: files.CACert, ServerCert: files.ServerCert, ServerKey: files.ServerKey, ClientDN: `x", "*`}},
	} {
		if _, err := hypervisor.CloudConfig(tc.host, tc.keys, tc.files, agent); err == nil {
			t.Errorf("%s: accepted", tc.name)
		}
	}
	for _, tc := range []struct {
		name string
		edit func(*hypervisor.Agent)
	}{
		{"no agent", func(a *hypervisor.Agent) { *a = hypervisor.Agent{} }},
		{"a URL that leaves its quotes", func(a *hypervisor.Agent) { a.BinaryURL = "http://h/x';reboot;'" }},
		{"a file URL", func(a *hypervisor.Agent) { a.BinaryURL = "file:///bin/sh" }},
		{"a short checksum", func(a *hypervisor.Agent) { a.SHA256 = "abcd" }},
		{"a config over two lines", func(a *hypervisor.Agent) { a.Config += "\nruncmd: [reboot]" }},
		{"a token over two lines", func(a *hypervisor.Agent) { a.Token += "\nx" }},
	} {
		a := agent
		tc.edit(&a)
		if _, err := hypervisor.CloudConfig("h", nil, files, a); err == nil {
			t.Errorf("%s: accepted", tc.name)
		}
	}
}
