//go:build integration

package domain

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// virtXMLValidate finds libvirt's schema checker, or fails: a missing tool
// must not pass as a valid document. virt-xml-validate (Debian package
// libvirt-clients) is a shell script around xmllint (libxml2-utils), which
// libvirt-clients does not depend on; the schemas come with libvirt0.
func virtXMLValidate(t *testing.T) string {
	t.Helper()
	tool, err := exec.LookPath("virt-xml-validate")
	if err != nil {
		t.Fatalf("virt-xml-validate is missing (Debian: apt-get install libvirt-clients libxml2-utils, or sudo make deps): %v", err)
	}
	if _, err := exec.LookPath("xmllint"); err != nil {
		t.Fatalf("xmllint, which virt-xml-validate runs, is missing (Debian: apt-get install libxml2-utils): %v", err)
	}
	return tool
}

func validate(t *testing.T, tool, path, schema string) {
	t.Helper()
	out, err := exec.Command(tool, path, schema).CombinedOutput()
	if err != nil {
		doc, _ := os.ReadFile(path)
		t.Errorf("%s %s %s: %v\n%s\n%s", tool, path, schema, err, out, doc)
	}
}

func TestXMLValidatesAgainstLibvirtSchema(t *testing.T) {
	tool := virtXMLValidate(t)
	dir := t.TempDir()
	for _, tc := range goldenCases() {
		t.Run(tc.name, func(t *testing.T) {
			doc, err := XML(tc.spec)
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, tc.name+".xml")
			if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
				t.Fatal(err)
			}
			validate(t, tool, path, "domain")
		})
	}
}

// TestWrittenCapsValidate checks the hand-written capabilities against
// libvirt's schema. The captured one is not checked: libvirt 9.0's schema
// refuses CPU feature names such as "sse4.1" that its own libvirtd writes.
func TestWrittenCapsValidate(t *testing.T) {
	validate(t, virtXMLValidate(t), filepath.Join("testdata", "caps", "aarch64-host.xml"), "capability")
}
