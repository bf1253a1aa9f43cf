//go:build integration

package main

import (
	"bytes"
	"context"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rackboot/rackboot/images/ramdisk"
)

// TestRamdiskBuildWithoutGo builds bin/rackboot with make build in a copy
// of the source tree, removes the copy, and runs "rackboot ramdisk build
// --arch all" from a directory of its own with a PATH in which no go
// command resolves: both ramdisks must come out of what the binary
// carries and Debian's archive alone.
func TestRamdiskBuildWithoutGo(t *testing.T) {
	for _, tool := range []string{"go", "make", "git"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("make build needs %s: %v", tool, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	src := filepath.Join(tmp, "src")
	copySource(t, root, src)
	start := time.Now()
	if out, err := exec.CommandContext(ctx, "make", "-C", src, "build").CombinedOutput(); err != nil {
		t.Fatalf("make build: %v\n%s", err, out)
	}
	t.Logf("make build in a copy of the tree: %.1f s", time.Since(start).Seconds())
	bin := filepath.Join(tmp, "rackboot")
	if err := os.Rename(filepath.Join(src, "bin", "rackboot"), bin); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(src); err != nil {
		t.Fatal(err)
	}

	const path = "/usr/bin:/bin"
	for _, dir := range filepath.SplitList(path) {
		if _, err := os.Stat(filepath.Join(dir, "go")); err == nil {
			t.Fatalf("%s/go exists: this PATH would find a go command", dir)
		}
	}
	work := filepath.Join(tmp, "work")
	os.Mkdir(work, 0o755)
	env := []string{"PATH=" + path, "HOME=" + work}
	for _, kv := range os.Environ() { // a proxy to the Debian mirror, if any
		if k, _, _ := strings.Cut(kv, "="); strings.EqualFold(k, "http_proxy") || strings.EqualFold(k, "https_proxy") || strings.EqualFold(k, "no_proxy") {
			env = append(env, kv)
		}
	}
	cmd := exec.CommandContext(ctx, bin, "ramdisk", "build", "--arch", "all", "--data-dir", "data")
	cmd.Dir, cmd.Env = work, env
	start = time.Now()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("rackboot ramdisk build: %v\n%s", err, out)
	}
	t.Logf("rackboot ramdisk build without go, in %.1f s:\n%s", time.Since(start).Seconds(), out)
	for _, arch := range []string{"x86_64", "aarch64"} {
		if !bytes.Contains(out, []byte(arch+": built in")) {
			t.Errorf("%s: no \"built in\" line", arch)
		}
		dir := filepath.Join(work, "data", "artifacts", arch)
		m, err := ramdisk.ReadManifest(dir)
		if err != nil {
			t.Fatal(err)
		}
		f, err := os.Open(filepath.Join(dir, "initrd"))
		if err != nil {
			t.Fatal(err)
		}
		entries, err := ramdisk.List(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]ramdisk.Entry{}
		for _, e := range entries {
			got[e.Name] = e
		}
		for name, link := range map[string]string{"init": "bin/init", "bin/uinit": "rackboot-agent", "bin/sh": "gosh"} {
			if got[name].Link != link {
				t.Errorf("%s: %s links to %q, want %q", arch, name, got[name].Link, link)
			}
		}
		for _, p := range []string{"init", "gosh", "ls", "cat", "dmesg", "ip", "ps", "rackboot-agent"} {
			if e := got["bin/"+p]; e.Size == 0 || m.Inputs.Programs[p] == "" {
				t.Errorf("%s: program %s: %d bytes in the initrd, sha256 %q in the manifest", arch, p, e.Size, m.Inputs.Programs[p])
			}
		}
		mods := slices.ContainsFunc(entries, func(e ramdisk.Entry) bool {
			return strings.HasPrefix(e.Name, "lib/modules/"+m.Release+"/") && strings.HasSuffix(e.Name, "virtio_net.ko")
		})
		if !mods || !strings.HasPrefix(m.Inputs.URoot, "v") {
			t.Errorf("%s: virtio_net.ko in the initrd %v, u-root version %q", arch, mods, m.Inputs.URoot)
		}
		t.Logf("%s: initrd %d bytes, %d modules, u-root %s", arch, m.Initrd.Size, len(m.Modules), m.Inputs.URoot)
	}
}

// copySource copies the files git knows (tracked, or untracked and not
// ignored) from the tree at root to dst: a clone of the working tree as
// it is, without its build outputs.
func copySource(t *testing.T, root, dst string) {
	t.Helper()
	out, err := exec.Command("git", "-C", root, "ls-files", "-z", "--cached", "--others", "--exclude-standard").Output()
	if err != nil {
		t.Fatalf("git ls-files: %v", err)
	}
	for _, name := range strings.Split(strings.TrimRight(string(out), "\x00"), "\x00") {
		from, to := filepath.Join(root, name), filepath.Join(dst, name)
		fi, err := os.Lstat(from)
		if err != nil {
			continue // deleted in the working tree
		}
		if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
			t.Fatal(err)
		}
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(from)
			if err == nil {
				err = os.Symlink(target, to)
			}
			if err != nil {
				t.Fatal(err)
			}
		case fi.Mode().IsRegular():
			b, err := os.ReadFile(from)
			if err == nil {
				err = os.WriteFile(to, b, fi.Mode().Perm())
			}
			if err != nil {
				t.Fatal(err)
			}
		}
	}
}
