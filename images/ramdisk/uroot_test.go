package ramdisk

import (
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// Two builds of one file at once (amd64 and arm64 ramdisks share the
// u-root builder) must both succeed and leave one whole file.
func TestBuildOnceConcurrent(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "cache", "u-root-v1")
	const n = 8
	var started sync.WaitGroup
	started.Add(n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = buildOnce(bin, func(tmp string) error {
				// Every build is under way before any finishes, as with
				// two cold builds of the same builder.
				started.Done()
				started.Wait()
				if err := os.WriteFile(tmp, []byte("#!/bin/sh\n"), 0o755); err != nil {
					return err
				}
				time.Sleep(time.Duration(i) * time.Millisecond)
				return nil
			})
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("build %d: %v", i, err)
		}
	}
	b, err := os.ReadFile(bin)
	if err != nil || string(b) != "#!/bin/sh\n" {
		t.Fatalf("built file: %q, %v", b, err)
	}
	left, _ := filepath.Glob(filepath.Join(filepath.Dir(bin), ".build-*"))
	if len(left) > 0 {
		t.Errorf("temporary files left behind: %v", left)
	}
}

func TestBuildOnceFailure(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "u-root-v1")
	boom := errors.New("boom")
	if err := buildOnce(bin, func(string) error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("err = %v, want boom", err)
	}
	if _, err := os.Stat(bin); !os.IsNotExist(err) {
		t.Fatalf("a failed build left %s: %v", bin, err)
	}
	// Once there, it is not built again.
	if err := os.WriteFile(bin, []byte("x"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := buildOnce(bin, func(string) error { return boom }); err != nil {
		t.Fatalf("existing file rebuilt: %v", err)
	}
}
