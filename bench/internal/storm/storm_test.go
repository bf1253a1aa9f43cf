package main

import (
	"context"
	"crypto/rand"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rackboot/rackboot/boot"
	"github.com/rackboot/rackboot/ipxe"
	"github.com/rackboot/rackboot/tftp"
)

// TestParseRackbootScripts reads the scripts rackboot itself writes: a
// change to them that the generator no longer follows fails here, not
// in the middle of a benchmark.
func TestParseRackbootScripts(t *testing.T) {
	s, err := parseScript(ipxe.Chain("http://10.66.0.1:8080"), "02:b0:57:10:00:07")
	if err != nil || s.chain != "http://10.66.0.1:8080/ipxe/02-b0-57-10-00-07?arch=x86_64" {
		t.Fatalf("chain script: %+v %v", s, err)
	}
	b, err := ipxe.Script(boot.Plan{Node: "n-1", Hostname: "h", Arch: boot.ArchX86_64, Action: boot.ActionNetboot,
		Kernel: "http://10.66.0.1:8080/artifacts/x86_64/vmlinuz", Initrds: []string{"http://10.66.0.1:8080/artifacts/x86_64/initrd", "http://10.66.0.1:8080/artifacts/x86_64/initrd-modules"},
		Cmdline: "console=ttyS0 rackboot.api=http://10.66.0.1:8080 rackboot.boot=s3cret"})
	if err != nil {
		t.Fatal(err)
	}
	s, err = parseScript(b, "02:b0:57:10:00:07")
	if err != nil || s.kernel != "http://10.66.0.1:8080/artifacts/x86_64/vmlinuz" || len(s.initrds) != 2 ||
		s.initrds[1] != "http://10.66.0.1:8080/artifacts/x86_64/initrd-modules" || cmdlineValue(s.cmdline, "rackboot.boot") != "s3cret" {
		t.Fatalf("node script: %+v %v\n%s", s, err, b)
	}
	b, err = ipxe.Script(boot.Plan{Node: "n-1", Action: boot.ActionLocal})
	if err != nil {
		t.Fatal(err)
	}
	if s, err = parseScript(b, "02:b0:57:10:00:07"); err != nil || !s.exit {
		t.Fatalf("local boot script: %+v %v\n%s", s, err, b)
	}
	for _, bad := range []string{"", "#!gpxe\nboot", "#!ipxe\necho nothing here\n"} {
		if _, err := parseScript([]byte(bad), "02:b0:57:10:00:07"); err == nil {
			t.Errorf("script %q: no error", bad)
		}
	}
}

// TestTFTPGet fetches files of awkward sizes from rackboot's TFTP
// server: empty, exactly one block (which ends with an empty one), and
// many blocks; a missing file is the server's error.
func TestTFTPGet(t *testing.T) {
	root := t.TempDir()
	sizes := map[string]int{"empty": 0, "one-block": 1468, "many": 300_000}
	for name, n := range sizes {
		b := make([]byte, n)
		rand.Read(b)
		if err := os.WriteFile(filepath.Join(root, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	files, err := tftp.NewDir(root)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- (&tftp.Server{Files: files}).Serve(ctx, conn) }()
	t.Cleanup(func() { cancel(); conn.Close(); <-done })
	server := conn.LocalAddr().(*net.UDPAddr).AddrPort()
	local := netip.MustParseAddr("127.0.0.1")
	for name, n := range sizes {
		got, again, err := tftpGet(local, server, name, 1468)
		if err != nil || got != int64(n) || again != 0 {
			t.Errorf("%s: %d bytes (want %d), %d resent, %v", name, got, n, again, err)
		}
	}
	if _, _, err := tftpGet(local, server, "nope", 1468); err == nil || !strings.Contains(err.Error(), "error") {
		t.Errorf("missing file: %v", err)
	}
}
