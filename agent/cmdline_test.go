package agent

import "testing"

func TestParseCmdline(t *testing.T) {
	for _, tc := range []struct {
		in, api, node string
		ok            bool
	}{
		{"console=ttyS0 rackboot.api=http://10.0.0.1:8080 rackboot.node=abc quiet", "http://10.0.0.1:8080/api/v1", "abc", true},
		{"rackboot.api=http://10.0.0.1:8080/api/v1/", "http://10.0.0.1:8080/api/v1", "", true},
		{"rackboot.api=https://rb.example/x", "https://rb.example/x/api/v1", "", true},
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
