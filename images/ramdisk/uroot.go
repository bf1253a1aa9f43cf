package ramdisk

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
)

// urootModule is the module whose builder and commands the ramdisk uses;
// go.mod pins its version (tools.go keeps the commands there).
const urootModule = "github.com/u-root/u-root"

// goCmd runs the go command in dir with extra environment, returning its
// standard output.
func goCmd(ctx context.Context, dir string, env []string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("go %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// urootVersion is the version of u-root that go.mod in dir requires.
func urootVersion(ctx context.Context, dir string) (string, error) {
	out, err := goCmd(ctx, dir, nil, "list", "-m", "-f", "{{.Version}}", urootModule)
	if err != nil {
		return "", fmt.Errorf("u-root version: %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}

// sourceHash hashes what the ramdisk's Go programs are built from: the
// Go version, the module versions of every dependency, and the contents
// of every file of the packages of the main module (the agent, its
// helpers), as built for linux/goarch.
func sourceHash(ctx context.Context, dir, goarch string, pkgs []string) (string, error) {
	const tmpl = `{{if not .Standard}}{{.ImportPath}}` + "\t" +
		`{{with .Module}}{{.Path}}@{{.Version}}{{with .Replace}}=>{{.Path}}@{{.Version}}{{end}}{{end}}` + "\t" +
		`{{.Dir}}` + "\t" + `{{join .GoFiles " "}} {{join .EmbedFiles " "}}{{end}}`
	env := []string{"GOOS=linux", "GOARCH=" + goarch, "CGO_ENABLED=0"}
	out, err := goCmd(ctx, dir, env, append([]string{"list", "-deps", "-f", tmpl}, pkgs...)...)
	if err != nil {
		return "", fmt.Errorf("hash sources: %w", err)
	}
	ver, err := goCmd(ctx, dir, nil, "env", "GOVERSION")
	if err != nil {
		return "", fmt.Errorf("hash sources: %w", err)
	}
	h := sha256.New()
	fmt.Fprintf(h, "go %s\n", bytes.TrimSpace(ver))
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	sort.Strings(lines)
	for _, l := range lines {
		f := strings.Split(l, "\t")
		if len(f) != 4 {
			continue
		}
		mod := f[1]
		fmt.Fprintf(h, "%s %s\n", f[0], mod)
		// A module from the module cache is immutable and named by its
		// version; the main module's files are hashed by content.
		if at := strings.LastIndex(mod, "@"); at >= 0 && at < len(mod)-1 && !strings.Contains(mod, "=>") {
			continue
		}
		for _, name := range strings.Fields(f[3]) {
			fh, err := os.Open(filepath.Join(f[2], name))
			if err != nil {
				return "", fmt.Errorf("hash sources: %w", err)
			}
			fmt.Fprintf(h, "file %s\n", name)
			_, err = io.Copy(h, fh)
			fh.Close()
			if err != nil {
				return "", fmt.Errorf("hash sources: %w", err)
			}
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// builder returns the u-root builder for this machine, built once into
// cache from the version go.mod requires.
func builder(ctx context.Context, dir, cache, version string) (string, error) {
	bin := filepath.Join(cache, "u-root-"+version)
	env := []string{"GOOS=" + runtime.GOOS, "GOARCH=" + runtime.GOARCH, "CGO_ENABLED=0"}
	err := buildOnce(bin, func(tmp string) error {
		_, err := goCmd(ctx, dir, env, "build", "-o", tmp, urootModule)
		return err
	})
	if err != nil {
		return "", fmt.Errorf("build the u-root builder: %w", err)
	}
	return bin, nil
}

// buildOnce makes the executable bin with build, unless it is there.
// Builds for two architectures (two processes, two tests) may ask for
// the same file at once: each builds to a temporary name of its own in
// the same directory and renames it into place, so neither ever finds
// the other's half-written file or loses its own to the other's rename.
func buildOnce(bin string, build func(tmp string) error) error {
	if fi, err := os.Stat(bin); err == nil && fi.Mode().IsRegular() {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(bin), 0o755); err != nil {
		return err
	}
	tmpDir, err := os.MkdirTemp(filepath.Dir(bin), ".build-"+filepath.Base(bin)+"-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmpDir)
	tmp := filepath.Join(tmpDir, filepath.Base(bin))
	if err := build(tmp); err != nil {
		return err
	}
	return os.Rename(tmp, bin)
}

// buildUroot packs the commands into a newc archive with u-root's
// builder: one busybox-style binary, /init, and /bin/uinit running the
// uinit command line.
func buildUroot(ctx context.Context, bin, dir, goarch, uinit string, cmds []string, log func(string)) ([]byte, error) {
	tmp, err := os.MkdirTemp("", "rackboot-uroot-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	out := filepath.Join(tmp, "uroot.cpio")
	args := []string{"-o", out, "-uinitcmd=" + uinit, "-defaultsh=gosh"}
	args = append(args, cmds...)
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOOS=linux", "GOARCH="+goarch, "CGO_ENABLED=0", "TMPDIR="+tmp)
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("u-root %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(logs.String()))
	}
	log(logs.String())
	return os.ReadFile(out)
}
