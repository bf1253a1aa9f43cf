package firmware

import (
	"context"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseContents(t *testing.T) {
	for _, tt := range []struct {
		name, in string
		want     map[string][]string
		err      bool
	}{
		{name: "bookworm", in: "lib/firmware/bnx2x/bnx2x-e1-7.13.21.0.fw                 non-free-firmware/kernel/firmware-bnx2x\n" +
			"usr/share/doc/a file with spaces/copyright   misc/a,non-free-firmware/kernel/b\n\n",
			want: map[string][]string{
				"lib/firmware/bnx2x/bnx2x-e1-7.13.21.0.fw":   {"firmware-bnx2x"},
				"usr/share/doc/a file with spaces/copyright": {"a", "b"},
			}},
		{name: "old header", in: "FILE                  LOCATION\n/lib/firmware/x.bin  kernel/firmware-x\n",
			want: map[string][]string{"lib/firmware/x.bin": {"firmware-x"}}},
		{name: "no location", in: "lib/firmware/x.bin\n", err: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := map[string][]string{}
			err := ParseContents(strings.NewReader(tt.in), func(f, p string) { got[f] = append(got[f], p) })
			if tt.err {
				if err == nil {
					t.Fatalf("no error; got %v", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

// TestNonFreeFirmware: packages and file lists of another component come
// from its own indexes, verified like main's; main does not see them.
func TestNonFreeFirmware(t *testing.T) {
	a := newFakeArchive(t, "bookworm", true, []fakePackage{
		{name: "firmware-bnx2x", version: "20230210-5", arch: "all", component: NonFreeFirmware,
			files: []tarFile{{name: "./lib/firmware/bnx2x/"}, {name: "./lib/firmware/bnx2x/e1.fw", body: "E1"},
				{name: "./lib/firmware/bnx2x/link.fw", link: "e1.fw"}, {name: "./lib/firmware/bnx2x/away.fw", link: "../other/x.fw"}}},
		{name: "firmware-amd64-only", version: "1", arch: "amd64", component: NonFreeFirmware,
			files: []tarFile{{name: "./lib/firmware/amd.bin", body: "A"}}},
		{name: "pci.ids", version: "1", arch: "all", files: []tarFile{{name: "./usr/share/misc/pci.ids", body: "x"}}},
	})
	ctx := context.Background()
	ar, err := Open(ctx, Options{Mirror: a.url(), Suite: "bookworm"})
	if err != nil {
		t.Fatal(err)
	}
	c, err := ar.Contents(ctx, NonFreeFirmware, "arm64")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"lib/firmware/bnx2x/e1.fw": "firmware-bnx2x", "lib/firmware/bnx2x/link.fw": "firmware-bnx2x",
		"lib/firmware/bnx2x/away.fw": "firmware-bnx2x"}
	if diff := cmp.Diff(want, c); diff != "" {
		t.Errorf("arm64 contents (-want +got):\n%s", diff)
	}
	if _, err := ar.Find(ctx, DebianArchAll, "firmware-bnx2x"); err == nil {
		t.Error("main holds a non-free-firmware package")
	}
	p, err := ar.FindIn(ctx, NonFreeFirmware, "arm64", "firmware-bnx2x")
	if err != nil {
		t.Fatal(err)
	}
	deb, err := ar.Download(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	files, missing, err := DebFiles(deb, []string{"lib/firmware/bnx2x/link.fw", "lib/firmware/bnx2x/away.fw", "lib/firmware/nothere.fw"})
	if err != nil {
		t.Fatal(err)
	}
	if string(files["lib/firmware/bnx2x/link.fw"]) != "E1" || len(files) != 1 {
		t.Errorf("files %q", files)
	}
	if diff := cmp.Diff([]string{"lib/firmware/bnx2x/away.fw", "lib/firmware/nothere.fw"}, missing); diff != "" {
		t.Errorf("missing (-want +got):\n%s", diff)
	}
	if _, err := ar.FindIn(ctx, NonFreeFirmware, "arm64", "firmware-amd64-only"); err == nil {
		t.Error("an amd64 package found for arm64")
	}
	a.serve["dists/bookworm/non-free-firmware/Contents-all.gz"] = []byte("tampered")
	ar2, _ := Open(ctx, Options{Mirror: a.url(), Suite: "bookworm"})
	if _, err := ar2.Contents(ctx, NonFreeFirmware, "amd64"); err == nil || !strings.Contains(err.Error(), "checksum") {
		t.Errorf("tampered contents: %v", err)
	}
}
