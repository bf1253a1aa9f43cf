//go:build integration

package libvirt

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rackboot/rackboot/internal/syncbuf"
	"github.com/rackboot/rackboot/lab"
)

// libvirtd is lab's isolated daemon of the machine's libvirt-daemon-system
// (none of the machine's libvirt state, its own directories and sockets),
// here in this machine's network namespace, serving unix, tcp (no
// authentication) and tls (a client certificate of newPKI's CA) on
// loopback.
type libvirtd struct {
	root    string
	socket  string
	tcpAddr string
	tlsAddr string
	tls     *tls.Config
}

func startLibvirtd(t *testing.T) *libvirtd {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("the libvirtd tests need root (mount namespace, QEMU)")
	}
	p := newPKI(t)
	key, err := x509.MarshalPKCS8PrivateKey(p.server.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	lv, err := lab.StartLibvirtd(ctx, nil, lab.LibvirtdOptions{TCP: true, TLS: &lab.LibvirtdTLS{
		CACert: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: p.ca.Raw}),
		Cert:   pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: p.server.Certificate[0]}),
		Key:    pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: key}),
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("libvirtd:\n%s", lv.Log())
		}
		lv.Close()
	})
	t.Logf("libvirtd in %s, tcp %s, tls %s", lv.Root, lv.TCPAddr, lv.TLSAddr)
	return &libvirtd{root: lv.Root, socket: lv.Socket, tcpAddr: lv.TCPAddr, tlsAddr: lv.TLSAddr,
		tls: &tls.Config{RootCAs: p.pool, Certificates: []tls.Certificate{p.client}}}
}

func randomName(prefix string) string {
	b := make([]byte, 4)
	rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// tcgDomain is the smallest x86-64 UEFI guest: q35 under TCG (the "qemu"
// domain type), OVMF, one raw virtio disk, a serial console, no network.
func tcgDomain(name, disk string) string {
	return fmt.Sprintf(`<domain type='qemu'>
  <name>%s</name>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
    <loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE_4M.fd</loader>
    <nvram template='/usr/share/OVMF/OVMF_VARS_4M.fd'/>
    <boot dev='hd'/>
  </os>
  <features><acpi/></features>
  <cpu mode='custom' match='exact'><model fallback='allow'>qemu64</model></cpu>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='%s'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <serial type='pty'><target port='0'/></serial>
    <console type='pty'><target type='serial' port='0'/></console>
    <memballoon model='none'/>
  </devices>
</domain>`, name, disk)
}

func TestLibvirtd(t *testing.T) {
	d := startLibvirtd(t)

	t.Run("unix", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
		defer cancel()
		step := time.Now()
		lap := func(what string) {
			t.Logf("%s: %v", what, time.Since(step).Round(time.Millisecond))
			step = time.Now()
		}
		c, err := Dial(ctx, "qemu+unix:///system?socket="+d.socket, Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		lap("dial")

		caps, err := c.Capabilities(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(caps, "<arch>x86_64</arch>") || !strings.Contains(caps, "<domain type='qemu'") {
			t.Fatalf("capabilities lack an x86_64 host or the qemu domain type:\n%s", caps)
		}
		lap("capabilities")

		pool, poolDir := "rackboot-test", filepath.Join(d.root, "pool", "images")
		if err := c.EnsurePool(ctx, pool, poolDir); err != nil {
			t.Fatal(err)
		}
		if err := c.EnsurePool(ctx, pool, poolDir); err != nil {
			t.Fatalf("second EnsurePool: %v", err)
		}
		if err := c.EnsurePool(ctx, pool, filepath.Join(d.root, "pool", "elsewhere")); err == nil {
			t.Fatal("EnsurePool accepted a pool of the same name at another directory")
		}
		lap("pool")

		name := randomName("rackboot-it-")
		disk, err := c.CreateVolume(ctx, pool, name+".raw", 64<<20)
		if err != nil {
			t.Fatal(err)
		}
		if want := filepath.Join(poolDir, name+".raw"); disk != want {
			t.Fatalf("volume path %s, want %s", disk, want)
		}
		if fi, err := os.Stat(disk); err != nil || fi.Size() != 64<<20 {
			t.Fatalf("volume file: %v, %v", fi, err)
		}
		if _, err := c.CreateVolume(ctx, pool, name+".raw", 1<<20); !errors.Is(err, ErrExists) {
			t.Fatalf("second CreateVolume: %v, want ErrExists", err)
		}
		if err := os.WriteFile(filepath.Join(poolDir, "stray.raw"), nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := c.CreateVolume(ctx, pool, "stray.raw", 1<<20); !errors.Is(err, ErrExists) {
			t.Fatalf("CreateVolume over a file the daemon did not make: %v, want ErrExists", err)
		}
		lap("volumes")

		if _, err := c.Define(ctx, strings.Replace(tcgDomain(name, disk), "<vcpu>", "<vcpus-typo/><vcpu>", 1)); err == nil || !strings.HasPrefix(err.Error(), "define "+name+": ") {
			t.Fatalf("define with an element the schema lacks: %v", err)
		}
		dom, err := c.Define(ctx, tcgDomain(name, disk))
		if err != nil {
			t.Fatal(err)
		}
		if dom.Name != name || len(dom.UUID) != 36 {
			t.Fatalf("defined %+v", dom)
		}
		if s, err := c.State(ctx, name); err != nil || s != StateShutoff {
			t.Fatalf("state after define: %q, %v", s, err)
		}
		doms, err := c.Domains(ctx)
		if err != nil || len(doms) != 1 || doms[0] != dom {
			t.Fatalf("domains: %+v, %v", doms, err)
		}
		lap("define")

		if err := c.Start(ctx, name); err != nil {
			t.Fatal(err)
		}
		if s, err := c.State(ctx, name); err != nil || s != StateRunning {
			t.Fatalf("state after start: %q, %v", s, err)
		}
		lap("start")

		// OVMF writes its boot manager's messages to the serial console
		// when the guest has no display: after the screen clearing
		// sequences, it says it found nothing to boot on the blank disk.
		var console syncbuf.Buffer
		cctx, stopConsole := context.WithCancel(ctx)
		consoleErr := make(chan error, 1)
		go func() { consoleErr <- c.Console(cctx, name, &console) }()
		deadline := time.Now().Add(2 * time.Minute)
		for !strings.Contains(console.String(), "BdsDxe") && time.Now().Before(deadline) {
			select {
			case err := <-consoleErr:
				t.Fatalf("console ended early: %v (read %q)", err, console.String())
			case <-time.After(200 * time.Millisecond):
			}
		}
		stopConsole()
		if err := <-consoleErr; err != nil {
			t.Fatalf("console: %v", err)
		}
		if !strings.Contains(console.String(), "BdsDxe") {
			t.Fatalf("console gave %q in 2 minutes, no BdsDxe message", console.String())
		}
		t.Logf("console: %q", trim(console.String(), 400))
		lap("console")
		// The console's own connection is gone; this one still works.
		if s, err := c.State(ctx, name); err != nil || s != StateRunning {
			t.Fatalf("state after console: %q, %v", s, err)
		}

		if err := c.Reboot(ctx, name); err != nil {
			t.Fatal(err)
		}
		if err := c.Shutdown(ctx, name); err != nil {
			t.Fatal(err)
		}
		if err := c.Destroy(ctx, name); err != nil {
			t.Fatal(err)
		}
		if s, err := c.State(ctx, name); err != nil || s != StateShutoff {
			t.Fatalf("state after destroy: %q, %v", s, err)
		}
		lap("destroy")

		nvram := filepath.Join(d.root, "lib", "qemu", "nvram", name+"_VARS.fd")
		if _, err := os.Stat(nvram); err != nil {
			t.Fatalf("no UEFI variable store before undefine: %v", err)
		}
		if err := c.Undefine(ctx, name); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(nvram); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("UEFI variable store after undefine: %v", err)
		}
		if err := c.DeleteVolume(ctx, pool, name+".raw"); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(disk); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("volume file after delete: %v", err)
		}
		lap("undefine and delete")

		for what, err := range map[string]error{
			"state":         second(c.State(ctx, name)),
			"start":         c.Start(ctx, name),
			"destroy":       c.Destroy(ctx, name),
			"undefine":      c.Undefine(ctx, name),
			"delete volume": c.DeleteVolume(ctx, pool, name+".raw"),
			"missing pool":  c.DeleteVolume(ctx, "no-such-pool", "x"),
		} {
			if !errors.Is(err, ErrNotFound) {
				t.Errorf("%s after removal: %v, want ErrNotFound", what, err)
			}
		}
		if err := c.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
		if _, err := c.Domains(ctx); err == nil {
			t.Error("domains after close: no error")
		}
	})

	t.Run("tcp", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		c, err := Dial(ctx, "qemu+tcp://"+d.tcpAddr+"/system", Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		caps, err := c.Capabilities(ctx)
		if err != nil || !strings.Contains(caps, "<arch>x86_64</arch>") {
			t.Fatalf("capabilities over tcp: %v", err)
		}
		if _, err := c.Domains(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := c.State(ctx, "no-such-domain"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("state of a missing domain: %v, want ErrNotFound", err)
		}
	})

	t.Run("ssh", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		key := newSigner(t)
		srv := startSSHServer(t, key.PublicKey())
		c, err := Dial(ctx, srv.uri(d.socket), Options{SSHKey: key, SSHHostKey: srv.hostKey.PublicKey()})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Domains(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := Dial(ctx, srv.uri(d.socket), Options{SSHKey: key, SSHHostKey: newSigner(t).PublicKey()}); !errors.Is(err, ErrUnknownHostKey) {
			t.Fatalf("dial with another pinned host key: %v, want ErrUnknownHostKey", err)
		}
	})

	t.Run("tls", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		c, err := Dial(ctx, "qemu+tls://"+d.tlsAddr+"/system", Options{TLS: d.tls})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Domains(ctx); err != nil {
			t.Fatal(err)
		}
		anonymous := d.tls.Clone()
		anonymous.Certificates = nil
		if c, err := Dial(ctx, "qemu+tls://"+d.tlsAddr+"/system", Options{TLS: anonymous}); err == nil {
			c.Close()
			t.Fatal("the daemon let a client in without a certificate")
		} else {
			t.Logf("without a client certificate: %v", err)
		}
	})
}

func second[T any](_ T, err error) error { return err }

func trim(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
