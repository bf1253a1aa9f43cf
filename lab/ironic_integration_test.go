//go:build integration

package lab

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// ironicNode is a node the test enrols and deploys.
type ironicNode struct {
	name, boot, arch, mac, group string
	uuid                         string
}

// TestIronic starts a real Ironic (Debian's ironic-api and
// ironic-conductor) with two conductors in groups g1 and g2, deploys four
// fake-hardware nodes — iPXE in each group, PXE (GRUB) for x86-64 and for
// AArch64 — and checks, and logs for whoever serves them, the files
// Ironic writes in each conductor's roots and in the dnsmasq provider's
// directories. The deploys stop at "wait call-back": there is no agent.
func TestIronic(t *testing.T) {
	// No root needed: Ironic runs as any user, on loopback.
	Require(t, "ironic-api", "ironic-conductor", "baremetal")
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	dir := t.TempDir()
	o := IronicOptions{
		Dir:       filepath.Join(dir, "ironic"),
		HostsDir:  filepath.Join(dir, "dhcp", "hostsdir"),
		OptsDir:   filepath.Join(dir, "dhcp", "optsdir"),
		LeaseFile: filepath.Join(dir, "dhcp", "leases"),
		Conductors: []IronicConductor{
			{Name: "c1", Group: "g1", HTTPURL: "http://10.9.0.1/ironic/c1", TFTPServer: "10.9.0.1"},
			{Name: "c2", Group: "g2", HTTPURL: "http://10.9.0.1/ironic/c2", TFTPServer: "10.9.0.2"},
		},
		// The agent's ipa-api-url in the boot configs: the API on
		// 127.0.0.1 is no use to a node.
		Conf: "[service_catalog]\nendpoint_override = http://10.9.0.1:6385\n",
	}
	// A dnsmasq lease for the x86 GRUB node: Ironic links its config by
	// IP address too (tftp_root/IP.conf) when the provider knows one.
	if err := os.MkdirAll(filepath.Dir(o.LeaseFile), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(o.LeaseFile, []byte("1893456000 aa:bb:cc:dd:ee:02 10.9.0.50 node-02 01:aa:bb:cc:dd:ee:02\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	ir, err := StartIronic(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("StartIronic took %v: API %s, conductors %+v", time.Since(start).Round(time.Millisecond), ir.URL, ir.Conductors)
	stopped := false
	defer func() {
		if !stopped {
			ir.Stop()
		}
	}()
	defer func() {
		if t.Failed() {
			t.Logf("logs:\n%s", ir.Logs(6000))
		}
	}()

	// The deploy kernel, ramdisk and image must be under Dir:
	// file_url_allowed_paths.
	files := filepath.Join(ir.Dir, "files")
	if err := os.MkdirAll(files, 0o755); err != nil {
		t.Fatal(err)
	}
	marker := map[string]string{"deploy_kernel": "KERNEL-MARKER-1\n", "deploy_ramdisk": "RAMDISK-MARKER-1\n", "image": "IMAGE-MARKER-1\n"}
	for name, body := range marker {
		if err := os.WriteFile(filepath.Join(files, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	sum := sha256.Sum256([]byte(marker["image"]))
	// The instance image comes over HTTP: for a file:// image the direct
	// deploy copies it into http_root/agent_images and, before it powers
	// the node on, checks that http_url serves it (HEAD), which nothing
	// does at 10.9.0.1 here.
	images := httptest.NewServer(http.FileServer(http.Dir(files)))
	defer images.Close()

	nodes := []*ironicNode{
		{name: "ipxe-g1", boot: "ipxe", arch: "x86_64", mac: "aa:bb:cc:dd:ee:ff", group: "g1"},
		{name: "ipxe-g2", boot: "ipxe", arch: "x86_64", mac: "aa:bb:cc:dd:ee:01", group: "g2"},
		{name: "pxe-x86", boot: "pxe", arch: "x86_64", mac: "aa:bb:cc:dd:ee:02", group: "g1"},
		{name: "pxe-arm", boot: "pxe", arch: "aarch64", mac: "aa:bb:cc:dd:ee:03", group: "g2"},
	}
	bm := func(args ...string) string {
		t.Helper()
		began := time.Now()
		out, err := ir.Baremetal(ctx, args...)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("baremetal %s (%v): %s", strings.Join(args, " "), time.Since(began).Round(time.Millisecond), strings.TrimSpace(string(out)))
		return strings.TrimSpace(string(out))
	}
	for _, n := range nodes {
		n.uuid = bm("node", "create", "--name", n.name, "--driver", "fake-hardware",
			"--boot-interface", n.boot, "--deploy-interface", "direct",
			"--power-interface", "fake", "--management-interface", "fake",
			"--conductor-group", n.group,
			"--driver-info", "deploy_kernel=file://"+filepath.Join(files, "deploy_kernel"),
			"--driver-info", "deploy_ramdisk=file://"+filepath.Join(files, "deploy_ramdisk"),
			"--property", "cpu_arch="+n.arch, "--property", "capabilities=boot_mode:uefi",
			"-f", "value", "-c", "uuid")
		bm("port", "create", "--node", n.uuid, n.mac, "-f", "value", "-c", "uuid")
	}
	for _, n := range nodes {
		bm("node", "manage", n.uuid, "--wait", "120")
		bm("node", "provide", n.uuid, "--wait", "120")
		bm("node", "set", n.uuid,
			"--instance-info", "image_source="+images.URL+"/image",
			"--instance-info", "image_os_hash_algo=sha256",
			"--instance-info", "image_os_hash_value="+hex.EncodeToString(sum[:]))
		bm("node", "deploy", n.uuid)
	}
	for _, n := range nodes {
		waitProvisionState(ctx, t, ir, n.uuid, "wait call-back")
	}
	hostsdir, optsdir := o.HostsDir, o.OptsDir
	dumpTree(t, "hostsdir", hostsdir)
	dumpTree(t, "optsdir", optsdir)
	for _, c := range ir.Conductors {
		dumpTree(t, c.Name+" http_root", c.HTTPRoot)
		dumpTree(t, c.Name+" tftp_root", c.TFTPRoot)
		dumpTree(t, c.Name+" master images", filepath.Join(ir.Dir, c.Name, "master_images"))
	}

	conductor := map[string]IronicConductor{}
	other := map[string]IronicConductor{}
	conductor["g1"], other["g1"] = ir.Conductors[0], ir.Conductors[1]
	conductor["g2"], other["g2"] = ir.Conductors[1], ir.Conductors[0]
	for _, n := range nodes {
		t.Run(n.name, func(t *testing.T) {
			c, oc := conductor[n.group], other[n.group]
			root, otherRoot := c.TFTPRoot, oc.TFTPRoot
			if n.boot == "ipxe" {
				root, otherRoot = c.HTTPRoot, oc.HTTPRoot
			}
			hyphen := strings.ReplaceAll(n.mac, ":", "-")
			for _, label := range []string{"deploy_kernel", "deploy_ramdisk"} {
				path := filepath.Join(root, n.uuid, label)
				expectFile(t, path, marker[label])
				// A file:// source is hard-linked (copied across file
				// systems), not cached in master_images: a plain file.
				src, _ := os.Stat(filepath.Join(files, label))
				got, err := os.Lstat(path)
				if err == nil {
					t.Logf("%s: regular file %v, same inode as the file:// source %v", path, got.Mode().IsRegular(), os.SameFile(src, got))
				}
			}
			config := expectFile(t, filepath.Join(root, n.uuid, "config"), "")
			if !strings.Contains(config, " ipa-api-url=http://10.9.0.1:6385 ") {
				t.Errorf("config does not carry the ipa-api-url of Conf's endpoint_override")
			}
			if _, err := os.Lstat(filepath.Join(otherRoot, n.uuid)); err == nil {
				t.Errorf("%s's files are in the other conductor's root %s too", n.name, otherRoot)
			}
			host := expectFile(t, filepath.Join(hostsdir, "ironic-"+n.mac+".conf"), "")
			if !strings.HasPrefix(host, n.mac+",set:") || !strings.Contains(host, ",set:ironic") {
				t.Errorf("hostsdir line %q: want %s,set:TAG,set:ironic", host, n.mac)
			}
			tag := strings.TrimPrefix(strings.Split(strings.TrimSpace(host), ",")[1], "set:")
			opts := expectFile(t, filepath.Join(optsdir, "ironic-"+n.uuid+".conf"), "")
			for _, line := range strings.Split(strings.TrimSpace(opts), "\n") {
				if !strings.HasPrefix(line, "tag:"+tag+",") {
					t.Errorf("optsdir line %q does not start with the host's tag %s", line, tag)
				}
			}
			if n.boot == "ipxe" {
				boot := expectFile(t, filepath.Join(root, "boot.ipxe"), "")
				if !strings.Contains(boot, "chain pxelinux.cfg/${mac:hexhyp}") {
					t.Errorf("boot.ipxe does not chain pxelinux.cfg/${mac:hexhyp}")
				}
				expectLink(t, filepath.Join(root, "pxelinux.cfg", hyphen), "../"+n.uuid+"/config")
				for _, want := range []string{c.HTTPURL + "/" + n.uuid + "/deploy_kernel", c.HTTPURL + "/" + n.uuid + "/deploy_ramdisk"} {
					if !strings.Contains(config, want) {
						t.Errorf("config does not name %s", want)
					}
				}
				want := "tag:" + tag + ",tag:ipxe,67," + c.HTTPURL + "/boot.ipxe"
				if !strings.Contains(opts, want+"\n") {
					t.Errorf("optsdir has no line %q", want)
				}
				if strings.Contains(opts, oc.HTTPURL) {
					t.Errorf("optsdir names the other conductor's http_url %s", oc.HTTPURL)
				}
				want = "tag:" + tag + ",tag:!ipxe,67,snponly.efi"
				if !strings.Contains(opts, want+"\n") {
					t.Errorf("optsdir has no line %q", want)
				}
				return
			}
			// PXE with UEFI is GRUB: per-MAC links in tftp_root, a
			// master grub/grub.cfg that loads /$net_default_mac.conf.
			expectLink(t, filepath.Join(root, "grub.cfg-01-"+hyphen), n.uuid+"/config")
			expectLink(t, filepath.Join(root, n.mac+".conf"), n.uuid+"/config")
			expectLink(t, filepath.Join(root, "pxelinux.cfg", "01-"+hyphen), "../"+n.uuid+"/config")
			if n.mac == "aa:bb:cc:dd:ee:02" {
				expectLink(t, filepath.Join(root, "10.9.0.50.conf"), n.uuid+"/config")
			}
			master := expectFile(t, filepath.Join(root, "grub", "grub.cfg"), "")
			if !strings.Contains(master, "configfile /$net_default_mac.conf") {
				t.Errorf("grub/grub.cfg does not load /$net_default_mac.conf")
			}
			kernelCmd, bootfile := "linuxefi ", "bootx64.efi"
			if n.arch == "aarch64" {
				kernelCmd, bootfile = "linux ", "grubaa64.efi"
			}
			if !strings.Contains(config, kernelCmd+n.uuid+"/deploy_kernel ") {
				t.Errorf("config does not load %s%s/deploy_kernel", kernelCmd, n.uuid)
			}
			for _, want := range []string{
				"tag:" + tag + ",67," + bootfile,
				"tag:" + tag + ",210," + c.TFTPRoot + "/",
				"tag:" + tag + ",66," + c.TFTPServer,
				"tag:" + tag + ",150," + c.TFTPServer,
				"tag:" + tag + ",255," + c.TFTPServer,
			} {
				if !strings.Contains(opts, want+"\n") {
					t.Errorf("optsdir has no line %q", want)
				}
			}
		})
	}

	began := time.Now()
	pids := []int{}
	for _, p := range ir.procs {
		pids = append(pids, p.cmd.Process.Pid)
	}
	stopped = true
	if err := ir.Stop(); err != nil {
		t.Error(err)
	}
	t.Logf("Stop took %v", time.Since(began).Round(time.Millisecond))
	for _, pid := range pids {
		if err := syscall.Kill(-pid, 0); err == nil {
			t.Errorf("process group %d still has processes after Stop", pid)
		}
	}
}

// waitProvisionState polls the node through the API until it reaches
// want, failing on "deploy failed" or after three minutes.
func waitProvisionState(ctx context.Context, t *testing.T, ir *Ironic, uuid, want string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	began := time.Now()
	var last struct {
		ProvisionState string `json:"provision_state"`
		LastError      string `json:"last_error"`
	}
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, ir.URL+"/v1/nodes/"+uuid, nil)
		req.Header.Set("X-OpenStack-Ironic-API-Version", ironicAPIVersion)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			json.NewDecoder(resp.Body).Decode(&last)
			resp.Body.Close()
		}
		switch last.ProvisionState {
		case want:
			t.Logf("node %s reached %q %v after deploy", uuid, want, time.Since(began).Round(time.Millisecond))
			return
		case "deploy failed", "error":
			t.Fatalf("node %s: %s: %s", uuid, last.ProvisionState, last.LastError)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("node %s: still %q, not %q: %v (last error %q)", uuid, last.ProvisionState, want, ctx.Err(), last.LastError)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// expectFile fails unless path (followed through links) is a file, and
// unless its contents are want when want is not empty; it returns them.
func expectFile(t *testing.T, path, want string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Errorf("want a file: %v", err)
		return ""
	}
	if want != "" && string(b) != want {
		t.Errorf("%s: got %q, want %q", path, b, want)
	}
	return string(b)
}

// expectLink fails unless path is a symlink to target, exactly as
// written in the link.
func expectLink(t *testing.T, path, target string) {
	t.Helper()
	got, err := os.Readlink(path)
	if err != nil {
		t.Errorf("want a symlink: %v", err)
		return
	}
	if got != target {
		t.Errorf("%s -> %s, want -> %s", path, got, target)
	}
	if _, err := os.Stat(path); err != nil {
		t.Errorf("%s -> %s dangles: %v", path, got, err)
	}
}

// dumpTree logs every entry under root: links with their targets, files
// with their size, link count and, when small, contents.
func dumpTree(t *testing.T, what, root string) {
	t.Helper()
	var b strings.Builder
	filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			fmt.Fprintf(&b, "%s: %v\n", path, err)
			return nil
		}
		rel, _ := filepath.Rel(root, path)
		fi, err := os.Lstat(path)
		if err != nil {
			return nil
		}
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			target, _ := os.Readlink(path)
			fmt.Fprintf(&b, "%s -> %s\n", rel, target)
		case fi.IsDir():
			fmt.Fprintf(&b, "%s/ (%v)\n", rel, fi.Mode().Perm())
		default:
			nlink := uint64(0)
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				nlink = uint64(st.Nlink)
			}
			fmt.Fprintf(&b, "%s (%d bytes, %v, %d links)\n", rel, fi.Size(), fi.Mode().Perm(), nlink)
			if fi.Size() <= 4096 {
				body, _ := os.ReadFile(path)
				fmt.Fprintf(&b, "  | %s\n", strings.ReplaceAll(strings.TrimRight(string(body), "\n"), "\n", "\n  | "))
			}
		}
		return nil
	})
	t.Logf("%s %s:\n%s", what, root, b.String())
}
