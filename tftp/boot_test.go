package tftp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/rackboot/rackboot/boot"
)

type planFunc func(ctx context.Context, mac net.HardwareAddr, arch boot.Arch, from netip.Addr) (boot.Plan, error)

func (f planFunc) Plan(ctx context.Context, mac net.HardwareAddr, arch boot.Arch, from netip.Addr) (boot.Plan, error) {
	return f(ctx, mac, arch, from)
}

func TestBootFiles(t *testing.T) {
	loaders, artifacts := t.TempDir(), t.TempDir()
	for dir, files := range map[string][]string{loaders: {"snponly.efi", "grub/grub.cfg", "grub/x.cfg"}, artifacts: {"x86_64/vmlinuz"}} {
		for _, f := range files {
			os.MkdirAll(filepath.Join(dir, filepath.Dir(f)), 0o755)
			if err := os.WriteFile(filepath.Join(dir, f), []byte("file "+f), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	ld, err := NewDir(loaders)
	if err != nil {
		t.Fatal(err)
	}
	ad, err := NewDir(artifacts)
	if err != nil {
		t.Fatal(err)
	}
	known := netip.MustParseAddrPort("10.0.0.5:1234")
	broken, _ := net.ParseMAC("52:54:00:00:00:ff")
	unknown, _ := net.ParseMAC("52:54:00:00:00:ee")
	b := &BootFiles{
		Loaders: ld, Artifacts: ad,
		Planner: planFunc(func(_ context.Context, mac net.HardwareAddr, _ boot.Arch, from netip.Addr) (boot.Plan, error) {
			switch mac.String() {
			case broken.String():
				return boot.Plan{}, errors.New("no kernel")
			case unknown.String():
				return boot.Plan{}, fmt.Errorf("plan: %w", boot.ErrUnknownNode)
			}
			// The planner hears who asked: the boot secret depends on it.
			return boot.Plan{Node: "node-" + mac.String() + " for " + from.String()}, nil
		}),
		ClientMAC: func(_ context.Context, ip netip.Addr) net.HardwareAddr {
			if ip == known.Addr() {
				m, _ := net.ParseMAC("52:54:00:00:00:05")
				return m
			}
			return nil
		},
		GRUBConfig:    func(p boot.Plan) ([]byte, error) { return []byte("config of " + p.Node), nil },
		GRUBBootstrap: []byte("bootstrap"),
	}
	stranger := netip.MustParseAddrPort("10.0.0.9:1234")
	for _, tc := range []struct {
		name, path string
		client     netip.AddrPort
		files      *BootFiles
		want       string
		err        error
	}{
		{"loader", "snponly.efi", stranger, b, "file snponly.efi", nil},
		{"artifact", "/artifacts/x86_64/vmlinuz", stranger, b, "file x86_64/vmlinuz", nil},
		{"artifact outside", "artifacts/../snponly.efi", stranger, b, "", ErrOutsideRoot},
		{"config by address", "/grub/grub.cfg", known, b, "config of node-52:54:00:00:00:05 for 10.0.0.5", nil},
		{"bootstrap for a stranger", "grub/grub.cfg", stranger, b, "bootstrap", nil},
		{"config by mac", "grub/52:54:00:00:00:07.cfg", stranger, b, "config of node-52:54:00:00:00:07 for 10.0.0.9", nil},
		{"config of no node", "grub/52:54:00:00:00:ee.cfg", stranger, b, "", fs.ErrNotExist},
		{"not a mac", "grub/x.cfg", stranger, b, "file grub/x.cfg", nil},
		{"plan fails", "grub/52:54:00:00:00:ff.cfg", stranger, b, "", nil},
		{"no planner", "grub/grub.cfg", known, &BootFiles{Loaders: ld}, "file grub/grub.cfg", nil},
		{"no artifacts", "artifacts/x86_64/vmlinuz", stranger, &BootFiles{Loaders: ld}, "", fs.ErrNotExist},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := tc.files.Open(context.Background(), tc.client, tc.path)
			if tc.want == "" {
				if err == nil {
					f.Close()
					t.Fatalf("open %s: no error", tc.path)
				}
				if tc.err != nil && !errors.Is(err, tc.err) {
					t.Fatalf("open %s: %v, want %v", tc.path, err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("open %s: %v", tc.path, err)
			}
			defer f.Close()
			got, _ := io.ReadAll(io.NewSectionReader(f, 0, f.Size()))
			if string(got) != tc.want {
				t.Errorf("open %s: %q, want %q", tc.path, got, tc.want)
			}
		})
	}
}
