package ramdisk

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/rackboot/rackboot/firmware"
)

func TestResolveFirmware(t *testing.T) {
	contents := map[string]string{
		"lib/firmware/bnx2x/bnx2x-e1-7.13.21.0.fw": "firmware-bnx2x",
		"usr/lib/firmware/intel/ice/ddp/ice.pkg":   "firmware-misc-nonfree",
		"lib/firmware/qcom/a.mbn":                  "firmware-qcom-soc",
		"lib/firmware/qcom/b.mbn":                  "firmware-qcom-soc",
		"usr/share/doc/firmware-bnx2x/copyright":   "firmware-bnx2x",
	}
	found, missing := resolveFirmware(map[string][]string{
		"bnx2x": {"bnx2x/bnx2x-e1-7.13.21.0.fw", "bnx2x/bnx2x-e1-7.99.0.0.fw"},
		"ice":   {"intel/ice/ddp/ice.pkg"},
		"qcom":  {"qcom/*.mbn", "qcom/*.elf"},
		"odd":   {"bnx2x/bnx2x-e1-7.99.0.0.fw", "firmware-bnx2x/copyright"},
	}, contents)
	want := map[string]firmwareMember{
		"bnx2x/bnx2x-e1-7.13.21.0.fw": {"firmware-bnx2x", "lib/firmware/bnx2x/bnx2x-e1-7.13.21.0.fw"},
		"intel/ice/ddp/ice.pkg":       {"firmware-misc-nonfree", "usr/lib/firmware/intel/ice/ddp/ice.pkg"},
		"qcom/a.mbn":                  {"firmware-qcom-soc", "lib/firmware/qcom/a.mbn"},
		"qcom/b.mbn":                  {"firmware-qcom-soc", "lib/firmware/qcom/b.mbn"},
	}
	if diff := cmp.Diff(want, found); diff != "" {
		t.Errorf("found (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"bnx2x/bnx2x-e1-7.99.0.0.fw", "firmware-bnx2x/copyright", "qcom/*.elf"}, missing); diff != "" {
		t.Errorf("missing (-want +got):\n%s", diff)
	}
}

// fwArchive is a mirror with one suite whose non-free-firmware component
// holds the given packages (arch all, files by member path).
type fwArchive struct {
	files    map[string][]byte
	mu       sync.Mutex
	requests int
}

func newFWArchive(t *testing.T, pkgs map[string]map[string]string) (*fwArchive, string) {
	t.Helper()
	a := &fwArchive{files: map[string][]byte{}}
	var index, contents strings.Builder
	for name, files := range pkgs {
		deb := packDeb(t, func(add func(string, []byte)) {
			for p, body := range files {
				add(p, []byte(body))
				fmt.Fprintf(&contents, "%s  non-free-firmware/kernel/%s\n", p, name)
			}
		})
		fn := "pool/non-free-firmware/f/" + name + "/" + name + "_1.0_all.deb"
		a.files[fn] = deb
		fmt.Fprintf(&index, "Package: %s\nVersion: 1.0\nArchitecture: all\nFilename: %s\nSize: %d\nSHA256: %x\n\n", name, fn, len(deb), sha256.Sum256(deb))
	}
	gz := func(s string) []byte {
		var b bytes.Buffer
		zw := gzip.NewWriter(&b)
		zw.Write([]byte(s))
		zw.Close()
		return b.Bytes()
	}
	var rel strings.Builder
	rel.WriteString("Suite: stable\nCodename: bookworm\nNo-Support-for-Architecture-all: Packages\nSHA256:\n")
	for p, b := range map[string][]byte{
		"non-free-firmware/binary-amd64/Packages": []byte(index.String()),
		"non-free-firmware/Contents-all.gz":       gz(contents.String()),
		"non-free-firmware/Contents-amd64.gz":     gz(""), // bookworm's firmware is all arch:all
	} {
		a.files["dists/bookworm/"+p] = b
		fmt.Fprintf(&rel, " %x %d %s\n", sha256.Sum256(b), len(b), p)
	}
	a.files["dists/bookworm/Release"] = []byte(rel.String())
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.mu.Lock()
		a.requests++
		b, ok := a.files[strings.TrimPrefix(r.URL.Path, "/")]
		a.mu.Unlock()
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Write(b)
	}))
	t.Cleanup(srv.Close)
	return a, srv.URL
}

// TestFetchFirmware: the requested files come out of verified packages
// into lib/firmware; what no package has is missing; a second fetch of
// the same requests needs no network, another set of requests does.
func TestFetchFirmware(t *testing.T) {
	a, url := newFWArchive(t, map[string]map[string]string{
		"firmware-bnx2x":        {"lib/firmware/bnx2x/e1.fw": "E1", "lib/firmware/bnx2x/e2.fw": "E2"},
		"firmware-misc-nonfree": {"lib/firmware/intel/ice/ddp/ice.pkg": "ICE"},
		"firmware-unused":       {"lib/firmware/unused.bin": "U"},
	})
	dir := t.TempDir()
	o := firmware.Options{Mirror: url, Suite: "bookworm"}
	req := map[string][]string{"bnx2x": {"bnx2x/e1.fw", "bnx2x/e9.fw"}, "ice": {"intel/ice/ddp/ice.pkg"}}
	ctx := context.Background()
	fs, err := fetchFirmware(ctx, o, "amd64", req, dir, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"bnx2x/e1.fw", "intel/ice/ddp/ice.pkg"}, fs.Files); diff != "" {
		t.Errorf("files (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"bnx2x/e9.fw"}, fs.Missing); diff != "" {
		t.Errorf("missing (-want +got):\n%s", diff)
	}
	var names []string
	for _, p := range fs.Packages {
		names = append(names, p.Name)
	}
	if diff := cmp.Diff([]string{"firmware-bnx2x", "firmware-misc-nonfree"}, names); diff != "" {
		t.Errorf("packages (-want +got):\n%s", diff)
	}
	got := map[string]string{}
	ents, err := List(bytes.NewReader(mustCompress(t, fs.Archive)))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if !e.IsDir() {
			got[e.Name] = ""
		}
	}
	if diff := cmp.Diff(map[string]string{"lib/firmware/bnx2x/e1.fw": "", "lib/firmware/intel/ice/ddp/ice.pkg": ""}, got); diff != "" {
		t.Errorf("archive (-want +got):\n%s", diff)
	}

	before := a.requests
	again, err := fetchFirmware(ctx, o, "amd64", req, dir, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if a.requests != before || !bytes.Equal(again.Archive, fs.Archive) {
		t.Errorf("a cached fetch made %d requests", a.requests-before)
	}
	// A damaged cached package is fetched again.
	os.WriteFile(filepath.Join(dir, firmwareDeb(fs.Packages[0])), []byte("x"), 0o644)
	if _, err := fetchFirmware(ctx, o, "amd64", req, dir, false, nil); err != nil || a.requests == before {
		t.Errorf("damaged package: %v, %d requests", err, a.requests-before)
	}
	// Other requests: another resolution, and the package no longer
	// needed is pruned.
	if _, err := fetchFirmware(ctx, o, "amd64", map[string][]string{"ice": {"intel/ice/ddp/ice.pkg"}}, dir, false, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, firmwareDeb(fs.Packages[0]))); !os.IsNotExist(err) {
		t.Errorf("the bnx2x package was kept: %v", err)
	}
}

func mustCompress(t *testing.T, archives ...[]byte) []byte {
	t.Helper()
	b, err := compress(archives...)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestReadKernelFirmware: the modules' "firmware=" entries are read.
func TestReadKernelFirmware(t *testing.T) {
	deb := fakeDeb(t, "6.1.0-9-amd64", [][2]string{
		{"kernel/drivers/net/ethernet/broadcom/bnx2x/bnx2x.ko", "name=bnx2x|depends=|firmware=bnx2x/e1.fw|firmware=bnx2x/e2.fw"},
		{"kernel/drivers/net/wireless/x.ko", "name=x|depends=|firmware=x.fw"},
	}, "")
	kf, _, err := readKernel(deb, selection{Dirs: DefaultModuleDirs})
	if err != nil {
		t.Fatal(err)
	}
	if len(kf.Modules) != 1 || kf.Modules["bnx2x"] == nil {
		t.Fatalf("modules %v", kf.Modules)
	}
	if diff := cmp.Diff([]string{"bnx2x/e1.fw", "bnx2x/e2.fw"}, kf.Modules["bnx2x"].Info.Firmware); diff != "" {
		t.Errorf("firmware (-want +got):\n%s", diff)
	}
}
