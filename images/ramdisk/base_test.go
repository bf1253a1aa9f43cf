package ramdisk

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/google/go-cmp/cmp"
	"github.com/rackboot/rackboot/boot"
	"github.com/rackboot/rackboot/images/ramdisk/payload"
)

// TestBaseArchive: the layout u-root's builder gave the ramdisk (listed
// from one it built), with each program in /bin instead of a multiplexer
// in /bbin.
func TestBaseArchive(t *testing.T) {
	progs := []payload.Program{{Name: "gosh", Data: []byte("sh")}, {Name: "init", Data: []byte("init")}, {Name: "rackboot-agent", Data: []byte("agent")}}
	b, err := baseArchive(progs, DefaultUInit)
	if err != nil {
		t.Fatal(err)
	}
	got, err := List(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	const dir, file, exe, dev, link = 0o040755, 0o100644, 0o100755, 0o020000, 0o120777
	want := []Entry{
		{Name: "bin", Mode: dir}, {Name: "dev", Mode: dir}, {Name: "env", Mode: dir}, {Name: "etc", Mode: dir},
		{Name: "lib64", Mode: dir}, {Name: "proc", Mode: dir}, {Name: "sys", Mode: dir}, {Name: "tcz", Mode: dir},
		{Name: "tmp", Mode: 0o040777}, {Name: "ubin", Mode: dir}, {Name: "usr", Mode: dir}, {Name: "usr/lib", Mode: dir},
		{Name: "var", Mode: dir}, {Name: "var/log", Mode: 0o040777}, {Name: "var/lock", Mode: 0o040777},
		{Name: "dev/console", Mode: dev | 0o600}, {Name: "dev/tty", Mode: dev | 0o666}, {Name: "dev/null", Mode: dev | 0o666},
		{Name: "dev/port", Mode: dev | 0o640}, {Name: "dev/urandom", Mode: dev | 0o666},
		{Name: "etc/resolv.conf", Mode: file, Size: int64(len(nameserver))}, {Name: "etc/localtime", Mode: file, Size: int64(len(gmt0))},
		{Name: "bin/gosh", Mode: exe, Size: 2}, {Name: "bin/init", Mode: exe, Size: 4}, {Name: "bin/rackboot-agent", Mode: exe, Size: 5},
		{Name: "bin/uinit", Mode: link, Size: 14, Link: "rackboot-agent"},
		{Name: "etc/uinit.flags", Mode: 0o100444, Size: 5},
		{Name: "init", Mode: link, Size: 8, Link: "bin/init"},
		{Name: "bin/sh", Mode: link, Size: 4, Link: "gosh"}, {Name: "bin/defaultsh", Mode: link, Size: 4, Link: "gosh"},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("layout (-want +got):\n%s", d)
	}
	// init reads its uinit's arguments from the flags file, one quoted
	// argument a line, as u-root's builder writes it.
	if !bytes.Contains(b, []byte("etc/uinit.flags\x00")) || !bytes.Contains(b, []byte(`"run"`)) {
		t.Error("no uinit.flags holding \"run\"")
	}
	b, err = baseArchive(progs, "rackboot-agent run --api-url \"http://x\"")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b, []byte("\"run\"\n\"--api-url\"\n\"\\\"http://x\\\"\"")) {
		t.Error("arguments not quoted one a line")
	}
	// A uinit with no arguments has no flags file.
	b, _ = baseArchive(progs, "init")
	if bytes.Contains(b, []byte("uinit.flags")) {
		t.Error("flags file for a uinit without arguments")
	}
	for _, c := range []struct {
		progs []payload.Program
		uinit string
	}{
		{progs[1:], DefaultUInit},
		{progs[:2], DefaultUInit},
		{progs, "testinit"},
		{progs, " "},
	} {
		if _, err := baseArchive(c.progs, c.uinit); err == nil {
			t.Errorf("programs %v, uinit %q: no error", c.progs, c.uinit)
		}
	}
}

// A binary without programs says so before it downloads anything (the
// mirror here does not exist).
func TestBuildWithoutPayload(t *testing.T) {
	o := Options{Arch: boot.ArchAArch64, DataDir: t.TempDir(), Payload: fstest.MapFS{"README.md": {Data: []byte("x")}}}
	o.Firmware.Mirror = "http://127.0.0.1:1/debian"
	_, err := Build(context.Background(), o)
	if !errors.Is(err, payload.ErrMissing) || !strings.Contains(err.Error(), "make build") {
		t.Fatalf("err = %v, want ErrMissing", err)
	}
}

func TestURootVersion(t *testing.T) {
	if v := urootVersion([]payload.Program{{Name: "init", Data: []byte("not go")}}); v != "" {
		t.Errorf("not a Go program: %q", v)
	}
	if v := urootVersion(nil); v != "" {
		t.Errorf("no init: %q", v)
	}
}
