package lab

import (
	"os"
	"os/exec"
	"slices"
	"strings"
)

// packages names the Debian package that provides each program the lab
// and the tests drive.
var packages = map[string]string{
	"qemu-system-x86_64":  "qemu-system-x86",
	"qemu-system-aarch64": "qemu-system-arm",
	"ip":                  "iproute2",
	"dnsmasq":             "dnsmasq-base",
	"udhcpc":              "udhcpc",
	"busybox":             "busybox",
	"tftp":                "tftp-hpa",
	"in.tftpd":            "tftpd-hpa",
	"atftp":               "atftp",
	"curl":                "curl",
	"dpkg-deb":            "dpkg",
	"apt-get":             "apt",
	"go":                  "golang-go",
	"ipmi_sim":            "openipmi",
	"ipmitool":            "ipmitool",
	"ironic-api":          "ironic-api",
	"ironic-conductor":    "ironic-conductor",
	"baremetal":           "python3-ironicclient",
}

// filePackages names the package behind each firmware directory, longest
// prefix first.
var filePackages = [][2]string{
	{"/usr/lib/ipxe/qemu/", "ipxe-qemu"},
	{"/usr/lib/ipxe/", "ipxe"},
	{"/usr/share/OVMF/", "ovmf"},
	{"/usr/share/AAVMF/", "qemu-efi-aarch64"},
	{"/usr/share/qemu-efi-aarch64/", "qemu-efi-aarch64"},
	{"/usr/share/seabios/", "seabios"},
}

// packageFor returns the Debian package that provides a program or an
// absolute file path, or "" when it is not known.
func packageFor(need string) string {
	if strings.HasPrefix(need, "/") {
		for _, fp := range filePackages {
			if strings.HasPrefix(need, fp[0]) {
				return fp[1]
			}
		}
		return ""
	}
	return packages[need]
}

// missing returns the needs that exist lets through as absent.
func missing(needs []string, exists func(string) bool) []string {
	var out []string
	for _, n := range needs {
		if !exists(n) && !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out
}

// installHint says how to install what is missing.
func installHint(missing []string) string {
	var pkgs, unknown []string
	for _, m := range missing {
		if p := packageFor(m); p != "" {
			if !slices.Contains(pkgs, p) {
				pkgs = append(pkgs, p)
			}
		} else {
			unknown = append(unknown, m)
		}
	}
	var hint []string
	if len(pkgs) > 0 {
		hint = append(hint, "apt-get install -y "+strings.Join(pkgs, " ")+", or run scripts/install-test-deps.sh")
	}
	if len(unknown) > 0 {
		hint = append(hint, "no known package for "+strings.Join(unknown, ", "))
	}
	return strings.Join(hint, "; ")
}

func onHost(need string) bool {
	if strings.HasPrefix(need, "/") {
		_, err := os.Stat(need)
		return err == nil
	}
	_, err := exec.LookPath(need)
	return err == nil
}

// TB is the part of testing.TB that Require and RequireRoot use. It is
// an interface of the lab's own so that the lab, which rackboot lab runs
// in the product, does not link the testing package.
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
}

// Require fails the test at once unless every program (looked up in
// PATH) and every absolute file path in needs exists, naming the Debian
// packages to install. The lab's tests never skip for a missing tool: a
// test that skips proves nothing.
func Require(t TB, needs ...string) {
	t.Helper()
	if m := missing(needs, onHost); len(m) > 0 {
		t.Fatalf("missing on this machine: %s (%s)", strings.Join(m, ", "), installHint(m))
	}
}

// RequireRoot fails the test unless it runs as root, which namespaces,
// taps and bridges need.
func RequireRoot(t TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatalf("this test needs root for network namespaces and taps (uid %d): run it with sudo", os.Geteuid())
	}
}
