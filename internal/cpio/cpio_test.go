package cpio

import (
	"bytes"
	"fmt"
	"os/exec"
	"strings"
	"testing"
)

// TestReadableByCpio checks the archive with the real cpio tool when it
// is there (Debian's cpio package), else with a header walk.
func TestLayout(t *testing.T) {
	var buf bytes.Buffer
	w := New(&buf)
	w.Dir("dev", 0o755)
	w.CharDev("dev/console", 0o600, 5, 1)
	w.File("/init", 0o755, []byte("#!/bin/sh\n"))
	w.Symlink("sh", "init")
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	b := buf.Bytes()
	if len(b)%4 != 0 || !bytes.HasPrefix(b, []byte("070701")) || !bytes.Contains(b, []byte("TRAILER!!!\x00")) {
		t.Fatalf("archive shape: %d bytes", len(b))
	}
	var names []string
	for off := 0; off < len(b); {
		h := string(b[off : off+110])
		if h[:6] != "070701" {
			t.Fatalf("bad magic at %d", off)
		}
		var size, nsize int
		fmt.Sscanf(h[54:62], "%x", &size)
		fmt.Sscanf(h[94:102], "%x", &nsize)
		name := string(b[off+110 : off+110+nsize-1])
		names = append(names, name)
		off += (110 + nsize + 3) &^ 3
		off += (size + 3) &^ 3
		if name == "TRAILER!!!" {
			break
		}
	}
	if got := strings.Join(names, ","); got != "dev,dev/console,init,sh,TRAILER!!!" {
		t.Fatalf("names %s", got)
	}
	if _, err := exec.LookPath("cpio"); err == nil {
		cmd := exec.Command("cpio", "-t")
		cmd.Stdin = bytes.NewReader(b)
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "dev/console") {
			t.Fatalf("cpio -t: %v %s", err, out)
		}
	}
}
