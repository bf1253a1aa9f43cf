package main

import (
	"path/filepath"
	"strings"
	"testing"
)

func TestArgs(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--devices", "0,x"}, `--devices "0,x"`},
		{[]string{"--seconds", "-1"}, "negative"},
		{[]string{"extra"}, "unexpected arguments"},
		{[]string{"--seconds", "0", "--lib", filepath.Join(t.TempDir(), "libcuda.so.1")}, "load "},
	} {
		if err := run(c.args); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: %v, want %q", c.args, err, c.want)
		}
	}
}
