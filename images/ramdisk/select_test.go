package ramdisk

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/rackboot/rackboot/agent/kmod"
)

// readTree reads a testdata kernel tree: the module files under
// lib/modules/<release>/, its modules.dep and modules.builtin.
func readTree(t *testing.T, dir string) (files []string, deps []kmod.Dep, builtin map[string]bool) {
	t.Helper()
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !isModule(p) {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		files = append(files, filepath.ToSlash(rel))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(dir, "modules.dep"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if deps, err = kmod.ParseDep(f); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "modules.builtin"))
	if err != nil {
		t.Fatal(err)
	}
	names, err := kmod.ParseBuiltin(strings.NewReader(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	builtin = map[string]bool{}
	for _, n := range names {
		builtin[n] = true
	}
	return files, deps, builtin
}

func TestSelectModules(t *testing.T) {
	files, deps, builtin := readTree(t, "testdata/select/lib/modules/6.1.0-9-amd64")
	for _, tt := range []struct {
		name        string
		sel         selection
		want, wantM []string
	}{
		{
			name: "default",
			sel:  selection{Dirs: DefaultModuleDirs, Named: []string{"ipmi_si", "efivarfs", "sd_mod"}},
			// Not wireless, GPUs, loop or IPoIB; yes mdio, ib_core and
			// async_tx, which drivers under the dirs need.
			want: []string{"async_tx", "e1000", "failover", "ib_core", "ipmi_msghandler", "ipmi_si", "mdio", "megaraid_sas",
				"mlx5_core", "mlx5_ib", "net_failover", "nvme", "nvme_core", "raid456", "scsi_transport_sas", "sd_mod",
				"virtio_blk", "virtio_net"},
		},
		{
			name:  "an explicit list overrides the dirs",
			sel:   selection{Named: []string{"virtio_net", "nouveau", "efivarfs", "ice"}},
			want:  []string{"failover", "net_failover", "nouveau", "virtio_net"},
			wantM: []string{"ice"},
		},
		{
			name: "a file entry takes that module alone",
			sel:  selection{Dirs: []string{"kernel/drivers/block/virtio_blk.ko", "kernel/drivers/nvme/host/nvme.ko"}},
			want: []string{"nvme", "nvme_core", "virtio_blk"},
		},
		{
			name: "a file entry matches a compressed module",
			sel:  selection{Dirs: []string{"kernel/drivers/gpu/drm/nouveau/nouveau.ko"}},
			want: []string{"nouveau"},
		},
		{
			name: "a directory is a path prefix, not a name prefix",
			sel:  selection{Dirs: []string{"kernel/drivers/net/"}},
			want: []string{"e1000", "failover", "iwlwifi", "mdio", "mlx5_core", "net_failover", "virtio_net"},
		},
		{name: "nothing", sel: selection{}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, missing, err := selectModules(files, deps, builtin, tt.sel)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("modules (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantM, missing); diff != "" {
				t.Errorf("missing (-want +got):\n%s", diff)
			}
		})
	}
	// A dependency with no file is an error.
	bad := append(deps, kmod.Dep{Path: "kernel/drivers/ata/ahci.ko", Deps: []string{"kernel/drivers/ata/libahci.ko"}})
	if _, _, err := selectModules(append(files, "kernel/drivers/ata/ahci.ko"), bad, builtin, selection{Dirs: DefaultModuleDirs}); err == nil {
		t.Error("a missing dependency was accepted")
	}
}
