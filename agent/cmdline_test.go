package agent

import (
	"strings"
	"testing"
)

func TestParseCmdline(t *testing.T) {
	for _, tc := range []struct {
		in, api, node string
		ok            bool
	}{
		{"console=ttyS0 rackboot.api=http://10.0.0.1:8080 rackboot.node=abc quiet", "http://10.0.0.1:8080/api/v1", "abc", true},
		{"rackboot.api=http://10.0.0.1:8080/api/v1/", "http://10.0.0.1:8080/api/v1", "", true},
		{"rackboot.api=https://rb.example/x rackboot.ca=sha256:" + strings.Repeat("ab", 32), "https://rb.example/x/api/v1", "", true},
		{"rackboot.api=https://rb.example/x", "", "", false}, // https with no pin
		{"rackboot.api=https://rb.example/ rackboot.ca=sha256:abc", "", "", false},
		{"rackboot.api=http://a/ rackboot.files=ftp://a/", "", "", false},
		{"console=ttyS0", "", "", false},
		{"rackboot.api=ftp://10.0.0.1/", "", "", false},
		{"rackboot.api=http://", "", "", false},
		{"rackboot.api=", "", "", false},
	} {
		c, err := ParseCmdline(tc.in)
		if (err == nil) != tc.ok || (tc.ok && (c.API != tc.api || c.Node != tc.node)) {
			t.Errorf("ParseCmdline(%q) = %+v, %v", tc.in, c, err)
		}
	}
	c, err := ParseCmdline("rackboot.api=http://10.0.0.1:8080 rackboot.node=abc rackboot.boot=0f1e2d3c4b5a69788796a5b4c3d2e1f0")
	if err != nil || c.BootSecret != "0f1e2d3c4b5a69788796a5b4c3d2e1f0" {
		t.Errorf("boot secret: %+v, %v", c, err)
	}
	if c.Files != "http://10.0.0.1:8080" {
		t.Errorf("files default to the API's server: %q", c.Files)
	}
	pin := "sha256:" + strings.Repeat("0a", 32)
	c, err = ParseCmdline("rackboot.api=https://10.0.0.1:8443 rackboot.files=http://10.0.0.1:8080/ rackboot.ca=" + pin + ",SHA256:" + strings.Repeat("0B", 32))
	if err != nil || c.Files != "http://10.0.0.1:8080" || len(c.Pins) != 2 || c.Pins[0] != pin || c.Pins[1] != "sha256:"+strings.Repeat("0b", 32) {
		t.Errorf("TLS API: %+v, %v", c, err)
	}
}

func FuzzParseCmdline(f *testing.F) {
	f.Add("console=ttyS0 rackboot.api=http://10.0.0.1:8080 rackboot.node=abc")
	f.Add("rackboot.api=%zz")
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseCmdline(s)
		if err == nil && c.API == "" {
			t.Fatal("no error and no API")
		}
	})
}
