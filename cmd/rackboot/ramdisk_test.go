package main

import (
	"os"
	"path/filepath"
	"testing"
)

func TestNonfreeFirmware(t *testing.T) {
	dir := t.TempDir()
	write := func(name, s string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	off := write("off.yaml", "ramdisk:\n  nonfree_firmware: false\n")
	unset := write("unset.yaml", "data_dir: /var/lib/rackboot\n")
	yes, no := true, false
	for _, tt := range []struct {
		name   string
		config string
		flag   *bool
		want   bool
	}{
		{"default", "", nil, true},
		{"config says no", off, nil, false},
		{"config without the key", unset, nil, true},
		{"the flag beats the config", off, &yes, true},
		{"the flag alone", "", &no, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := nonfreeFirmware(tt.config, tt.flag)
			if err != nil || got != tt.want {
				t.Errorf("nonfreeFirmware(%q, %v) = %v, %v; want %v", tt.config, tt.flag, got, err, tt.want)
			}
		})
	}
	if _, err := nonfreeFirmware(write("bad.yaml", "ramdisk:\n  nonfree_firmwar: false\n"), nil); err == nil {
		t.Error("a misspelt key was accepted")
	}
}
