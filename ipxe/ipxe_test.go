package ipxe

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/rackboot/rackboot/boot"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read golden file (run with -update to create it): %v", err)
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("%s mismatch (-want +got):\n%s", path, diff)
	}
}

func netboot(hostname string) boot.Plan {
	return boot.Plan{
		Action:   boot.ActionNetboot,
		Node:     "n-0042",
		Hostname: hostname,
		Arch:     boot.ArchX86_64,
		Kernel:   "http://10.0.0.1:8080/artifacts/agent/x86_64/vmlinuz",
		Initrds: []string{
			"http://10.0.0.1:8080/artifacts/agent/x86_64/initrd.cpio.gz",
			"http://10.0.0.1:8080/artifacts/agent/x86_64/modules.cpio.gz",
		},
		Cmdline: "console=ttyS0,115200 rackboot.api=http://10.0.0.1:8080 quiet",
	}
}

func TestScriptGolden(t *testing.T) {
	aarch := boot.Plan{
		Action:   boot.ActionNetboot,
		Node:     "n-7",
		Hostname: "arm-07.rack2",
		Arch:     boot.ArchAArch64,
		Kernel:   "http://[fd00::1]/artifacts/agent/aarch64/Image",
		Initrds:  []string{"/artifacts/agent/aarch64/initrd.cpio.gz"},
		Cmdline:  "console=ttyAMA0",
	}
	tests := []struct {
		name string
		plan boot.Plan
	}{
		{"netboot-x86_64", netboot("gpu-01.rack1")},
		{"netboot-aarch64", aarch},
		{"netboot-no-initrd", boot.Plan{Action: boot.ActionNetboot, Node: "n-1", Kernel: "https://boot.example/k?v=1&x=a b"}},
		{"local", boot.Plan{Action: boot.ActionLocal, Node: "n-0042", Hostname: "db-3"}},
		{"hostile-newline", netboot("evil\nshell")},
		{"hostile-setting", netboot("${x}")},
		{"hostile-or", boot.Plan{Action: boot.ActionLocal, Node: "a && b", Hostname: "a || shell"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Script(tt.plan)
			if err != nil {
				t.Fatal(err)
			}
			golden(t, tt.name+".ipxe", got)
		})
	}
}

func TestChainGolden(t *testing.T) {
	golden(t, "chain.ipxe", Chain("http://10.0.0.1:8080/"))
}

func TestScriptRefuses(t *testing.T) {
	tests := []struct {
		name string
		edit func(p *boot.Plan)
	}{
		{"cmdline newline", func(p *boot.Plan) { p.Cmdline = "quiet\nshell" }},
		{"cmdline setting", func(p *boot.Plan) { p.Cmdline = "root=${root}" }},
		{"cmdline or", func(p *boot.Plan) { p.Cmdline = "quiet || shell" }},
		{"cmdline and", func(p *boot.Plan) { p.Cmdline = "quiet && shell" }},
		{"cmdline cr", func(p *boot.Plan) { p.Cmdline = "quiet\rshell" }},
		{"kernel ftp", func(p *boot.Plan) { p.Kernel = "ftp://10.0.0.1/vmlinuz" }},
		{"kernel tftp", func(p *boot.Plan) { p.Kernel = "tftp://10.0.0.1/vmlinuz" }},
		{"kernel relative", func(p *boot.Plan) { p.Kernel = "vmlinuz" }},
		{"kernel no host", func(p *boot.Plan) { p.Kernel = "http:///vmlinuz" }},
		{"kernel userinfo", func(p *boot.Plan) { p.Kernel = "http://u:p@10.0.0.1/vmlinuz" }},
		{"kernel newline", func(p *boot.Plan) { p.Kernel = "http://10.0.0.1/vm\nlinuz" }},
		{"kernel host setting", func(p *boot.Plan) { p.Kernel = "http://${x}/vmlinuz" }},
		{"initrd script", func(p *boot.Plan) { p.Initrds = []string{"javascript:alert(1)"} }},
		{"initrd protocol-relative", func(p *boot.Plan) { p.Initrds = []string{"//evil/i"} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := netboot("ok")
			tt.edit(&p)
			got, err := Script(p)
			if !errors.Is(err, ErrUnsafe) {
				t.Fatalf("Script = %q, %v; want an error wrapping ErrUnsafe", got, err)
			}
		})
	}
}

func TestScriptErrors(t *testing.T) {
	for _, p := range []boot.Plan{
		{Action: "reboot", Node: "n"},
		{Node: "n"},
		{Action: boot.ActionNetboot, Node: "n"},
	} {
		if got, err := Script(p); err == nil {
			t.Errorf("Script(%+v) = %q, want an error", p, got)
		}
	}
}

func TestScriptEncodesURL(t *testing.T) {
	p := netboot("h")
	p.Kernel = "http://10.0.0.1/a$b/c{d}|e;f'g`h\\i"
	got, err := Script(p)
	if err != nil {
		t.Fatal(err)
	}
	line := lineWith(string(got), "kernel ")
	fields := strings.Fields(line)
	if len(fields) < 2 {
		t.Fatalf("kernel line %q", line)
	}
	if u := fields[1]; strings.ContainsAny(u, "${}|;'`\\") {
		t.Errorf("kernel URL %q holds iPXE syntax", u)
	}
}

func lineWith(s, prefix string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, prefix) {
			return l
		}
	}
	return ""
}

// checkScript holds what must be true of any script, whatever the plan:
// node data never starts a line, expands a setting or adds a command.
func checkScript(t *testing.T, p boot.Plan, got []byte) {
	t.Helper()
	allowed := map[string]bool{
		"#!ipxe": true, "echo": true, "exit": true, ":retry": true, "imgfree": true,
		"kernel": true, "initrd": true, "boot": true, ":failed": true, "sleep": true, "goto": true,
	}
	for _, l := range strings.Split(strings.TrimSuffix(string(got), "\n"), "\n") {
		if l == "set rackboot_local 1" { // the one fixed setting, for the chain script
			continue
		}
		cmd, _, _ := strings.Cut(l, " ")
		if !allowed[cmd] {
			t.Fatalf("plan %+v: line %q starts with %q", p, l, cmd)
		}
		if strings.Contains(l, "${") || strings.Contains(l, "&&") || strings.Contains(l, ";") {
			t.Fatalf("plan %+v: line %q expands a setting or chains a command", p, l)
		}
		if strings.Count(l, "||") > 1 || strings.Contains(l, "||") && !strings.HasSuffix(l, " || goto failed") {
			t.Fatalf("plan %+v: line %q has an injected ||", p, l)
		}
		if strings.ContainsRune(l, '\r') {
			t.Fatalf("plan %+v: line %q holds a CR", p, l)
		}
	}
	wantLines := 5
	if p.Action == boot.ActionNetboot {
		wantLines = 10 + len(p.Initrds)
	}
	if n := bytes.Count(got, []byte("\n")); n != wantLines {
		t.Fatalf("plan %+v: %d lines, want %d:\n%s", p, n, wantLines, got)
	}
}

func FuzzScript(f *testing.F) {
	f.Add("netboot", "n-1", "host", "http://10.0.0.1/k", "http://10.0.0.1/i", "console=ttyS0")
	f.Add("netboot", "n\n1", "evil\nshell", "http://10.0.0.1/k${x}", "/i", "a || b")
	f.Add("local", "${x}", "a || shell", "", "", "")
	f.Add("netboot", "n", "h", "https://[::1]:80/a b?c=d&e=f#g", "http://h/%0a", "x\ry")
	f.Fuzz(func(t *testing.T, action, node, host, kernel, initrd, cmdline string) {
		p := boot.Plan{Action: boot.Action(action), Node: node, Hostname: host, Kernel: kernel, Cmdline: cmdline}
		if initrd != "" {
			p.Initrds = []string{initrd, initrd}
		}
		got, err := Script(p)
		if err != nil {
			return
		}
		checkScript(t, p, got)
	})
}
