package hypervisor_test

import (
	"flag"
	"os"
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
	got, err := hypervisor.CloudConfig("gpu-07", []string{"ssh-ed25519 AAAA ops@example"}, files)
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
		if f.Path == hypervisor.ServerKeyPath && f.Permissions != "0600" {
			t.Errorf("the server key is %s", f.Permissions)
		}
	}
	if byPath[hypervisor.ServerKeyPath] != string(files.ServerKey) || byPath[hypervisor.CACertPath] != string(files.CACert) {
		t.Errorf("files read back: %v", byPath)
	}
	if !strings.Contains(byPath[hypervisor.LibvirtdConf], `tls_allowed_dn_list = ["O=rackboot,CN=rackboot"]`) {
		t.Errorf("libvirtd.conf: %q", byPath[hypervisor.LibvirtdConf])
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
		if _, err := hypervisor.CloudConfig(tc.host, tc.keys, tc.files); err == nil {
			t.Errorf("%s: accepted", tc.name)
		}
	}
}
