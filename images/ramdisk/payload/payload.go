// Package payload holds the programs every agent ramdisk carries: u-root's
// init, its shell (gosh), a few commands for a technician on the console
// and rackboot-agent, each a static Linux executable for amd64 and for
// arm64. make build compiles them (Compile, through the mkpayload command)
// into files/ before it builds bin/rackboot, which embeds them, so that
// rackboot ramdisk build needs neither the source tree nor a Go toolchain.
//
// The tree is one <goarch>.tar.zst per architecture: a tar of the
// executables, each named as u-root names a command (the last element of
// its package path), compressed as one stream with a window that spans
// them all, so that what they share (Go's runtime and standard library)
// is stored about once. A clone that make build has not run in holds only
// files/README.md: the binary it builds carries no programs, and Load says
// so with ErrMissing.
package payload

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/rackboot/rackboot/internal/atomicfile"
)

//go:embed files
var embedded embed.FS

// Embedded returns the programs built into this binary.
func Embedded() fs.FS {
	sub, err := fs.Sub(embedded, "files")
	if err != nil {
		panic(err) // "files" is a valid path
	}
	return sub
}

// Dir is where make build puts the programs, relative to the module root.
const Dir = "images/ramdisk/payload/files"

// Agent is the agent's main package, relative to the module root.
const Agent = "./cmd/rackboot-agent"

// Default are the main packages a ramdisk carries: init, a shell and a few
// commands for a technician on the console, and the agent.
var Default = []string{
	"github.com/u-root/u-root/cmds/core/init",
	"github.com/u-root/u-root/cmds/core/gosh",
	"github.com/u-root/u-root/cmds/core/ls",
	"github.com/u-root/u-root/cmds/core/cat",
	"github.com/u-root/u-root/cmds/core/dmesg",
	"github.com/u-root/u-root/cmds/core/ip",
	"github.com/u-root/u-root/cmds/core/ps",
	Agent,
}

// Arches are the Go architectures the ramdisks are built for.
var Arches = []string{"amd64", "arm64"}

// ErrMissing means the payload has no programs for an architecture: the
// binary was built without make build.
var ErrMissing = errors.New("this binary carries no agent: build it with make build")

// Name is the name of a package's command: its last path element.
func Name(pkg string) string { return path.Base(strings.TrimRight(pkg, "/")) }

// Program is one executable of the payload.
type Program struct {
	Name string
	Data []byte // the executable
}

// SHA256 is the hex sha256 of the executable.
func (p Program) SHA256() string {
	h := sha256.Sum256(p.Data)
	return hex.EncodeToString(h[:])
}

// window is the compression window: more than all of one architecture's
// programs together (about 28 MB).
const window = 64 << 20

// File is the name of goarch's archive in the payload.
func File(goarch string) string { return goarch + ".tar.zst" }

// Load reads the programs for goarch from fsys, sorted by name.
func Load(fsys fs.FS, goarch string) ([]Program, error) {
	b, err := fs.ReadFile(fsys, File(goarch))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w (it has no programs for %s)", ErrMissing, goarch)
	}
	if err != nil {
		return nil, fmt.Errorf("load payload: %w", err)
	}
	zr, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(window))
	if err != nil {
		return nil, fmt.Errorf("load payload: %w", err)
	}
	defer zr.Close()
	t, err := zr.DecodeAll(b, nil)
	if err != nil {
		return nil, fmt.Errorf("load payload %s: %w", File(goarch), err)
	}
	var out []Program
	tr := tar.NewReader(bytes.NewReader(t))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("load payload %s: %w", File(goarch), err)
		}
		if h.Typeflag != tar.TypeReg || strings.Contains(h.Name, "/") {
			return nil, fmt.Errorf("load payload %s: unexpected member %q", File(goarch), h.Name)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			return nil, fmt.Errorf("load payload %s: %w", File(goarch), err)
		}
		out = append(out, Program{Name: h.Name, Data: data})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w (its archive for %s is empty)", ErrMissing, goarch)
	}
	slices.SortFunc(out, func(a, b Program) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// pack writes the programs in dir, by name, as a compressed tar with
// nothing in it but names, modes and contents, so the same programs give
// the same bytes.
func pack(dir string, names []string) ([]byte, error) {
	names = slices.Sorted(slices.Values(names))
	var t bytes.Buffer
	tw := tar.NewWriter(&t)
	for _, n := range names {
		data, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil {
			return nil, err
		}
		h := &tar.Header{Typeflag: tar.TypeReg, Name: n, Mode: 0o755, Size: int64(len(data)), ModTime: time.Unix(0, 0), Format: tar.FormatUSTAR}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	zw, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedBestCompression), zstd.WithWindowSize(window), zstd.WithEncoderConcurrency(1))
	if err != nil {
		return nil, err
	}
	defer zw.Close()
	return zw.EncodeAll(t.Bytes(), nil), nil
}

// Options say what Compile builds. Zero values are defaults.
type Options struct {
	// SourceDir is the root of the rackboot module, whose go.mod pins
	// u-root; "" means the current dir.
	SourceDir string
	// Dir receives <goarch>.tar.zst; "" means SourceDir/Dir.
	Dir string
	// Arches are Go architectures; nil means Arches.
	Arches []string
	// Packages are the main packages to build, relative to SourceDir or
	// full import paths; nil means Default. Their names must differ.
	Packages []string
	// Logger receives progress; nil means discard.
	Logger *slog.Logger
}

// Compile cross-compiles the packages for each architecture with the go
// command (static, CGO_ENABLED=0, -trimpath, stripped) and packs them to
// o.Dir/<goarch>.tar.zst. An archive whose content did not change is not
// rewritten.
func Compile(ctx context.Context, o Options) error {
	if o.SourceDir == "" {
		o.SourceDir = "."
	}
	if o.Dir == "" {
		o.Dir = filepath.Join(o.SourceDir, Dir)
	}
	if o.Arches == nil {
		o.Arches = Arches
	}
	if o.Packages == nil {
		o.Packages = Default
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var names []string
	for _, p := range o.Packages {
		n := Name(p)
		if slices.Contains(names, n) {
			return fmt.Errorf("compile payload: two packages named %s", n)
		}
		names = append(names, n)
	}
	for _, goarch := range o.Arches {
		tmp, err := os.MkdirTemp("", "rackboot-payload-")
		if err != nil {
			return fmt.Errorf("compile payload: %w", err)
		}
		defer os.RemoveAll(tmp)
		// One go build for every package: it builds and links them in
		// parallel, each to tmp/<name>.
		args := append([]string{"build", "-trimpath", "-ldflags=-s -w", "-o", tmp + "/"}, o.Packages...)
		cmd := exec.CommandContext(ctx, "go", args...)
		cmd.Dir = o.SourceDir
		cmd.Env = append(os.Environ(), "GOOS=linux", "GOARCH="+goarch, "CGO_ENABLED=0")
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("compile payload for %s: go %s: %w: %s", goarch, strings.Join(args, " "), err, strings.TrimSpace(out.String()))
		}
		z, err := pack(tmp, names)
		if err != nil {
			return fmt.Errorf("compile payload for %s: %w", goarch, err)
		}
		file := filepath.Join(o.Dir, File(goarch))
		if old, err := os.ReadFile(file); err != nil || !bytes.Equal(old, z) {
			if err := atomicfile.Write(file, z); err != nil {
				return fmt.Errorf("compile payload: %w", err)
			}
		}
		log.Info("payload compiled", "arch", goarch, "programs", strings.Join(names, " "), "bytes", len(z), "file", file)
	}
	return nil
}
