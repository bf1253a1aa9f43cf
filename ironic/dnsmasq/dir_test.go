package dnsmasq

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// writeInPlace writes as Ironic does: open with truncation, write, close.
func writeInPlace(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func bootfile(d *Dir, m string, tags ...string) string {
	r, ok := d.Lookup(mac(m), tags...)
	switch {
	case !ok:
		return "<not listed>"
	case r.Ignore:
		return "<ignored>"
	}
	v, ok := r.Option(OptBootfileName)
	if !ok {
		return "<none>"
	}
	return string(v)
}

func TestDirLoad(t *testing.T) {
	root := t.TempDir()
	h1, h2, o1, o2 := filepath.Join(root, "h1"), filepath.Join(root, "h2"), filepath.Join(root, "o1"), filepath.Join(root, "o2")
	for _, d := range []string{h1, h2, o1, o2, filepath.Join(h1, "sub")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	files := map[string]string{
		filepath.Join(h1, "ironic-52:54:00:00:00:01.conf"): "52:54:00:00:00:01,set:n1,set:ironic\n",
		filepath.Join(h2, "ironic-52:54:00:00:00:02.conf"): "52:54:00:00:00:02,set:n2,set:ironic\n",
		filepath.Join(h2, "hand-written"):                  "52:54:00:00:00:03,set:n3\nbad line\n",
		filepath.Join(h1, ".ironic-52:54:00:00:00:04.tmp"): "52:54:00:00:00:04,set:n1\n",
		filepath.Join(h1, "old~"):                          "52:54:00:00:00:05,set:n1\n",
		filepath.Join(h1, "#autosave#"):                    "52:54:00:00:00:06,set:n1\n",
		filepath.Join(o1, "ironic-n1.conf"):                "tag:n1,67,one.efi\n",
		filepath.Join(o2, "ironic-n2.conf"):                "tag:n2,67,two.efi\n",
		filepath.Join(o2, "n3"):                            "tag:n3,67,three.efi\n",
	}
	for p, c := range files {
		writeInPlace(t, p, c)
	}
	d := &Dir{HostsDirs: []string{h1, h2}, OptsDirs: []string{o1, o2, filepath.Join(root, "missing")}}
	if err := d.Load(); err == nil {
		t.Error("no error for a missing directory")
	}
	for m, want := range map[string]string{
		"52:54:00:00:00:01": "one.efi",
		"52:54:00:00:00:02": "two.efi",
		"52:54:00:00:00:03": "three.efi",
		"52:54:00:00:00:04": "<not listed>",
		"52:54:00:00:00:05": "<not listed>",
		"52:54:00:00:00:06": "<not listed>",
	} {
		if got := bootfile(d, m); got != want {
			t.Errorf("%s: %s, want %s", m, got, want)
		}
	}
	p := d.Problems()
	if len(p) != 1 || p[0].File != filepath.Join(h2, "hand-written") || p[0].Line != 2 || !errors.Is(p[0], ErrUnsupported) {
		t.Errorf("problems %v", p)
	}
}

// TestDirNewestFileWins: two files naming one MAC count in the order they
// were last written, as dnsmasq reads a file again when it changes.
func TestDirNewestFileWins(t *testing.T) {
	dir, opts := t.TempDir(), t.TempDir()
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	writeInPlace(t, a, "52:54:00:00:00:01,set:a\n")
	writeInPlace(t, b, "52:54:00:00:00:01,ignore\n")
	writeInPlace(t, filepath.Join(opts, "o"), "tag:a,67,a.efi\n")
	old := time.Now().Add(-time.Hour)
	if err := os.Chtimes(b, old, old); err != nil {
		t.Fatal(err)
	}
	d := &Dir{HostsDirs: []string{dir}, OptsDirs: []string{opts}}
	if err := d.Load(); err != nil {
		t.Fatal(err)
	}
	if got := bootfile(d, "52:54:00:00:00:01"); got != "a.efi" {
		t.Fatalf("got %s, want a.efi", got)
	}
	if err := os.Chtimes(a, old.Add(-time.Hour), old.Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := d.Load(); err != nil {
		t.Fatal(err)
	}
	if got := bootfile(d, "52:54:00:00:00:01"); got != "<ignored>" {
		t.Fatalf("got %s, want <ignored>", got)
	}
}

func TestWatch(t *testing.T) {
	hosts, opts := t.TempDir(), t.TempDir()
	late := filepath.Join(t.TempDir(), "conductor2")
	d := &Dir{HostsDirs: []string{hosts, late}, OptsDirs: []string{opts}, Rescan: 300 * time.Millisecond, Settle: time.Second}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Watch(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Watch: %v", err)
		}
	}()

	// Readers never stop while files change under them.
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
					d.Lookup(mac("52:54:00:00:00:01"), "ipxe")
				}
			}
		}()
	}
	defer func() { close(stop); wg.Wait() }()

	const m = "52:54:00:00:00:01"
	hf := filepath.Join(hosts, "ironic-"+m+".conf")
	of := filepath.Join(opts, "ironic-node.conf")
	writeInPlace(t, of, "tag:t1,tag:!ipxe,67,snponly.efi\ntag:t1,tag:ipxe,67,http://h/boot.ipxe\n")
	writeInPlace(t, hf, m+",set:t1,set:ironic\n")
	eventually(t, "a written host", func() bool { return bootfile(d, m) == "snponly.efi" })
	if got := bootfile(d, m, "ipxe"); got != "http://h/boot.ipxe" {
		t.Errorf("from iPXE: %s", got)
	}

	writeInPlace(t, of, "tag:t1,67,grubx64.efi\n")
	eventually(t, "an option file modified in place", func() bool { return bootfile(d, m) == "grubx64.efi" })

	// Caught between truncation and write: the old lines stay until the
	// file completes.
	writeInPlace(t, hf, "")
	time.Sleep(150 * time.Millisecond)
	if got := bootfile(d, m); got != "grubx64.efi" {
		t.Fatalf("after truncation: %s", got)
	}
	writeInPlace(t, hf, m+",ign")
	time.Sleep(150 * time.Millisecond)
	if got := bootfile(d, m); got != "grubx64.efi" {
		t.Fatalf("half a line: %s", got)
	}
	writeInPlace(t, hf, m+",ignore\n")
	eventually(t, "ignore", func() bool { return bootfile(d, m) == "<ignored>" })

	// A file that stays empty is taken as it is once settled.
	writeInPlace(t, hf, "")
	eventually(t, "an empty file settled", func() bool { return bootfile(d, m) == "<not listed>" })

	writeInPlace(t, hf, m+",set:t1\n")
	eventually(t, "rewritten", func() bool { return bootfile(d, m) == "grubx64.efi" })
	if err := os.Remove(of); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a deleted option file", func() bool { return bootfile(d, m) == "<none>" })
	if err := os.Remove(hf); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a deleted host file", func() bool { return bootfile(d, m) == "<not listed>" })

	// A directory that did not exist when watching began has no watch:
	// the rescan finds it, and watches it from then on.
	if err := os.Mkdir(late, 0o755); err != nil {
		t.Fatal(err)
	}
	writeInPlace(t, filepath.Join(late, "x"), "52:54:00:00:00:02,set:t2\n")
	writeInPlace(t, filepath.Join(opts, "y"), "tag:t2,67,late.efi\n")
	eventually(t, "a file in a late directory", func() bool { return bootfile(d, "52:54:00:00:00:02") == "late.efi" })

	// A directory replaced by another: the watch left with the old one,
	// and the rescan picks up the new.
	if err := os.Rename(late, late+".old"); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(late, 0o755); err != nil {
		t.Fatal(err)
	}
	writeInPlace(t, filepath.Join(late, "x"), "52:54:00:00:00:02,set:t2,set:again\n")
	eventually(t, "a file in a replaced directory", func() bool {
		r, _ := d.Lookup(mac("52:54:00:00:00:02"))
		return len(r.Tags) == 3
	})

	// Renamed into place, as atomic writers do.
	tmp := filepath.Join(late, ".x.tmp")
	writeInPlace(t, tmp, "52:54:00:00:00:02,ignore\n")
	if err := os.Rename(tmp, filepath.Join(late, "x")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a renamed file", func() bool { return bootfile(d, "52:54:00:00:00:02") == "<ignored>" })
}

// TestWatchEventsAlone: with rescans off, inotify alone keeps up.
func TestWatchEventsAlone(t *testing.T) {
	hosts, opts := t.TempDir(), t.TempDir()
	d := &Dir{HostsDirs: []string{hosts}, OptsDirs: []string{opts}, Rescan: -1}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go d.Watch(ctx)
	writeInPlace(t, filepath.Join(opts, "o"), "tag:t,67,a.efi\n")
	for i := range 20 {
		writeInPlace(t, filepath.Join(hosts, "h"), "52:54:00:00:00:01,set:t\n")
		eventually(t, "set", func() bool { return bootfile(d, "52:54:00:00:00:01") == "a.efi" })
		writeInPlace(t, filepath.Join(hosts, "h"), "52:54:00:00:00:01,ignore\n")
		eventually(t, "ignore", func() bool { return bootfile(d, "52:54:00:00:00:01") == "<ignored>" })
		_ = i
	}
}

// TestDirHalfWritten steps the clock by hand: a file caught empty or
// mid-line keeps its previous lines until it completes or settles.
func TestDirHalfWritten(t *testing.T) {
	hosts, opts := t.TempDir(), t.TempDir()
	hf := filepath.Join(hosts, "h")
	writeInPlace(t, filepath.Join(opts, "o"), "tag:a,67,a.efi\ntag:b,67,b.efi\n")
	d := &Dir{HostsDirs: []string{hosts}, OptsDirs: []string{opts}, Settle: time.Minute}
	t0 := time.Now()
	step := func(at time.Duration, content, want string, wantRetry bool) {
		t.Helper()
		if content != "-" {
			writeInPlace(t, hf, content)
		}
		retry, err := d.scan(t0.Add(at))
		if err != nil {
			t.Fatal(err)
		}
		if got := bootfile(d, "52:54:00:00:00:01"); got != want {
			t.Errorf("at %v with %q: %s, want %s", at, content, got, want)
		}
		if !retry.IsZero() != wantRetry {
			t.Errorf("at %v with %q: retry %v", at, content, retry)
		}
	}
	step(0, "52:54:00:00:00:01,se", "<not listed>", true)
	step(time.Second, "52:54:00:00:00:01,set:a\n", "a.efi", false)
	step(2*time.Second, "", "a.efi", true)
	step(3*time.Second, "52:54:00:00:00:01,set:", "a.efi", true)
	step(3*time.Second+time.Minute, "-", "<not listed>", false) // settled: a line without a tag
	step(4*time.Minute, "52:54:00:00:00:01,set:b\n", "b.efi", false)
	step(5*time.Minute, "", "b.efi", true)
	step(6*time.Minute, "-", "<not listed>", false) // settled empty
	if p := d.Problems(); len(p) != 0 {
		t.Errorf("problems %v", p)
	}
}
