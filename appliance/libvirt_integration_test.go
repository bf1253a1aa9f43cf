//go:build integration

package appliance

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/rackboot/rackboot/boot"
	"github.com/rackboot/rackboot/hypervisor"
	"github.com/rackboot/rackboot/hypervisor/libvirt"
	"github.com/rackboot/rackboot/internal/tlspin"
	"github.com/rackboot/rackboot/lab"
)

// TestHypervisorTLS deploys nothing but everything a node deployed with
// role hypervisor gets: the cloud-config's libvirt files and
// tls_allowed_dn_list, read back from the YAML, configure a real libvirtd;
// rackboot, with the client certificate it made in its data dir, reads the
// daemon's capabilities over qemu+tls; a client certificate of another CA
// is refused, and so is a daemon whose certificate does not name the host.
func TestHypervisorTLS(t *testing.T) {
	lab.RequireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dataDir := t.TempDir()
	ca, err := libvirtPKI(dataDir)
	if err != nil {
		t.Fatal(err)
	}
	files, err := hypervisorTLS(dataDir, ca)([]string{"127.0.0.1", "hv-01"})
	if err != nil {
		t.Fatal(err)
	}
	agent, err := hypervisorAgent("http://10.79.3.1:8080", "", nil, map[boot.Arch]string{boot.ArchX86_64: strings.Repeat("0f", 32)})("node-1", boot.ArchX86_64)
	if err != nil {
		t.Fatal(err)
	}
	agent.Token = "rbt_" + strings.Repeat("ab", 32)
	seed, err := hypervisor.CloudConfig("hv-01", nil, files, agent)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		WriteFiles []struct {
			Path    string `yaml:"path"`
			Content string `yaml:"content"`
		} `yaml:"write_files"`
	}
	if err := yaml.Unmarshal([]byte(seed), &doc); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, f := range doc.WriteFiles {
		got[f.Path] = f.Content
	}
	n, err := lab.NewNet(ctx, fmt.Sprintf("rbtls%d", os.Getpid()), netip.MustParsePrefix("10.79.3.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	lv, err := lab.StartLibvirtd(ctx, n, lab.LibvirtdOptions{TLS: &lab.LibvirtdTLS{CACert: []byte(got[hypervisor.CACertPath]), Cert: []byte(got[hypervisor.ServerCertPath]),
		Key: []byte(got[hypervisor.ServerKeyPath]), Conf: got[hypervisor.LibvirtdConf]}})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if t.Failed() {
			t.Logf("libvirtd:\n%s", lv.Log())
		}
		lv.Close()
	}()
	opt, err := libvirtOptions(dataDir)
	if err != nil {
		t.Fatal(err)
	}
	uri := "qemu+tls://" + lv.TLSAddr + "/system"
	c, err := libvirt.Dial(ctx, uri, opt)
	if err != nil {
		t.Fatalf("rackboot's own client certificate: %v", err)
	}
	caps, err := c.Capabilities(ctx)
	c.Close()
	if err != nil || !strings.Contains(caps, "<arch name='x86_64'>") && !strings.Contains(caps, `<arch name="x86_64">`) {
		t.Fatalf("capabilities over qemu+tls: %v\n%.300s", err, caps)
	}

	// A client certificate of another CA: the daemon refuses it.
	other, err := tlspin.LoadOrCreateCA(t.TempDir(), "other", "another CA")
	if err != nil {
		t.Fatal(err)
	}
	cert, key, err := other.Issue("rackboot", nil, true)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	bad := opt
	bad.TLS = opt.TLS.Clone()
	bad.TLS.Certificates = []tls.Certificate{pair}
	if c, err := libvirt.Dial(ctx, uri, bad); err == nil {
		_, err = c.Capabilities(ctx)
		c.Close()
		if err == nil {
			t.Error("a client certificate of another CA was let in")
		}
	}
	// rackboot's CA, but another subject: tls_allowed_dn_list refuses it.
	cert, key, err = ca.Issue("someone-else", nil, true)
	if err != nil {
		t.Fatal(err)
	}
	if pair, err = tls.X509KeyPair(cert, key); err != nil {
		t.Fatal(err)
	}
	bad.TLS.Certificates = []tls.Certificate{pair}
	if c, err := libvirt.Dial(ctx, uri, bad); err == nil {
		_, err = c.Capabilities(ctx)
		c.Close()
		if err == nil {
			t.Error("a certificate of rackboot's CA with another subject was let in")
		}
	}
	// A daemon reached by a name its certificate does not carry.
	if c, err := libvirt.Dial(ctx, "qemu+tls://localhost:"+strings.Split(lv.TLSAddr, ":")[1]+"/system", opt); err == nil {
		c.Close()
		t.Error("a server certificate without the host's name was accepted")
	}
	// The files are rackboot's and stay: a second start keeps them.
	before, _ := os.ReadFile(filepath.Join(dataDir, LibvirtDir, "clientcert.pem"))
	if _, err := libvirtPKI(dataDir); err != nil {
		t.Fatal(err)
	}
	if after, _ := os.ReadFile(filepath.Join(dataDir, LibvirtDir, "clientcert.pem")); string(after) != string(before) {
		t.Error("a second start replaced the client certificate")
	}
}
