//go:build integration

package wipe

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestLoopDevice wipes a real block device (a loop device over a used
// disk image): the ioctls (discard, zero-out) are what a real disk gets.
func TestLoopDevice(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root for a loop device: run with sudo")
	}
	for _, method := range []string{Quick, Full} {
		t.Run(method, func(t *testing.T) {
			img := usedDisk(t, 96<<20)
			out, err := exec.Command("losetup", "--find", "--show", img).CombinedOutput()
			if err != nil {
				t.Fatalf("losetup: %v %s", err, out)
			}
			dev := strings.TrimSpace(string(out))
			defer exec.Command("losetup", "-d", dev).Run()
			rec, err := Disk(context.Background(), dev, "", method, nil)
			if err != nil {
				t.Fatal(err)
			}
			want := map[string]string{Quick: "signatures", Full: "discard"}[method]
			if rec.Method != want && !(method == Full && rec.Method == "zeroout") {
				t.Errorf("method %s, want %s", rec.Method, want)
			}
			exec.Command("losetup", "-d", dev).Run()
			b, _ := os.ReadFile(img)
			if strings.Contains(string(b), "EFI PART") || strings.Contains(string(b), "EXT4SUPERBLOCK") {
				t.Error("signatures survived")
			}
			if method == Full && !allZero(b) {
				t.Error("full wipe left data")
			}
			t.Logf("%s: %+v", method, rec)
		})
	}
}
