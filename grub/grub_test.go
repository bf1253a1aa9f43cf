package grub

import (
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
		Arch:     boot.ArchAArch64,
		Kernel:   "http://10.0.0.1:8080/artifacts/agent/aarch64/Image",
		Initrds: []string{
			"http://10.0.0.1:8080/artifacts/agent/aarch64/initrd.cpio.gz",
			"http://10.0.0.1:8080/artifacts/agent/aarch64/modules.cpio.gz",
		},
		Cmdline: "console=ttyAMA0 rackboot.api=http://10.0.0.1:8080 quiet",
	}
}

func TestConfigGolden(t *testing.T) {
	tests := []struct {
		name string
		plan boot.Plan
	}{
		{"netboot-aarch64", netboot("arm-01.rack1")},
		{"netboot-x86_64-paths", boot.Plan{
			Action: boot.ActionNetboot, Node: "n-1", Hostname: "gpu-01", Arch: boot.ArchX86_64,
			Kernel: "/artifacts/agent/x86_64/vmlinuz", Initrds: []string{"/artifacts/agent/x86_64/initrd.cpio.gz"},
			Cmdline: "console=ttyS0 msg=\"it's fine\" a=${b}  \"\" x",
		}},
		{"local", boot.Plan{Action: boot.ActionLocal, Node: "n-0042", Hostname: "db-3", Arch: boot.ArchX86_64}},
		{"local-aarch64", boot.Plan{Action: boot.ActionLocal, Node: "n-0043", Hostname: "gpu-7", Arch: boot.ArchAArch64}},
		{"hostile-quote", netboot("x'; reboot; echo '")},
		{"hostile-setting", netboot("${x} $(y)")},
		{"hostile-brace", boot.Plan{Action: boot.ActionLocal, Node: "}\nmenuentry", Hostname: "a || shell"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Config(tt.plan)
			if tt.name == "hostile-brace" {
				if !errors.Is(err, ErrUnsafe) {
					t.Fatalf("Config = %q, %v; want ErrUnsafe", got, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			golden(t, tt.name+".cfg", got)
		})
	}
}

// TestHTTPConfigGolden: the GRUB with http fetches the kernel and initrds
// over HTTP from the host and port of the plan's URLs.
func TestHTTPConfigGolden(t *testing.T) {
	for name, p := range map[string]boot.Plan{
		"http-netboot-aarch64": netboot("arm-01.rack1"),
		"http-netboot-paths": {Action: boot.ActionNetboot, Node: "n-1", Hostname: "arm-02", Arch: boot.ArchAArch64,
			Kernel: "/artifacts/aarch64/vmlinuz", Initrds: []string{"/artifacts/aarch64/initrd a"}, Cmdline: "console=ttyAMA0"},
		"http-local-aarch64": {Action: boot.ActionLocal, Node: "n-0043", Hostname: "gpu-7", Arch: boot.ArchAArch64},
	} {
		t.Run(name, func(t *testing.T) {
			got, err := HTTPConfig(p)
			if err != nil {
				t.Fatal(err)
			}
			golden(t, name+".cfg", got)
		})
	}
	for _, k := range []string{"http://a)b:80/k", "http://10.0.0.1:x/k", "http://u@10.0.0.1/k", "http://10.0.0.1/k?x", "https://10.0.0.1/k"} {
		p := netboot("ok")
		p.Kernel = k
		if _, err := HTTPConfig(p); err == nil {
			t.Errorf("HTTPConfig with kernel %q: no error", k)
		}
	}
}

func TestBootstrapGolden(t *testing.T) {
	golden(t, "bootstrap.cfg", Bootstrap())
}

func TestConfigRefuses(t *testing.T) {
	tests := []struct {
		name string
		edit func(p *boot.Plan)
	}{
		{"hostname newline", func(p *boot.Plan) { p.Hostname = "evil\nshell" }},
		{"hostname cr", func(p *boot.Plan) { p.Hostname = "evil\rshell" }},
		{"node nel", func(p *boot.Plan) { p.Node = "evil\u0085shell" }},
		{"cmdline newline", func(p *boot.Plan) { p.Cmdline = "quiet\nreboot" }},
		{"cmdline control", func(p *boot.Plan) { p.Cmdline = "quiet\x1b[2J" }},
		{"kernel https", func(p *boot.Plan) { p.Kernel = "https://10.0.0.1/vmlinuz" }},
		{"kernel query", func(p *boot.Plan) { p.Kernel = "http://10.0.0.1/vmlinuz?x=1" }},
		{"kernel relative", func(p *boot.Plan) { p.Kernel = "vmlinuz" }},
		{"kernel userinfo", func(p *boot.Plan) { p.Kernel = "http://u@10.0.0.1/vmlinuz" }},
		{"kernel encoded newline", func(p *boot.Plan) { p.Kernel = "http://10.0.0.1/a%0aexit" }},
		{"kernel host paren", func(p *boot.Plan) { p.Kernel = "http://a)b/k" }},
		{"initrd protocol-relative", func(p *boot.Plan) { p.Initrds = []string{"//h/i"} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := netboot("ok")
			tt.edit(&p)
			got, err := Config(p)
			if !errors.Is(err, ErrUnsafe) {
				t.Fatalf("Config = %q, %v; want an error wrapping ErrUnsafe", got, err)
			}
		})
	}
}

func TestConfigErrors(t *testing.T) {
	for _, p := range []boot.Plan{
		{Action: "reboot", Node: "n"},
		{Node: "n"},
		{Action: boot.ActionNetboot, Node: "n"},
	} {
		if got, err := Config(p); err == nil {
			t.Errorf("Config(%+v) = %q, want an error", p, got)
		}
	}
}

func TestKernelArgs(t *testing.T) {
	tests := []struct {
		in   string
		want []string
	}{
		{"", nil},
		{"  a  b ", []string{"a", "b"}},
		{`msg="a b" c`, []string{"msg=a b", "c"}},
		{`"" x`, []string{"", "x"}},
		{"a\tb", []string{"a", "b"}},
		{`it's`, []string{"it's"}},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, kernelArgs(tt.in)); diff != "" {
				t.Errorf("kernelArgs(%q) (-want +got):\n%s", tt.in, diff)
			}
		})
	}
}

func TestQuote(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", "''"},
		{"a b", "'a b'"},
		{"it's", `'it'\''s'`},
		{"${x}", "'${x}'"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := quote(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("quote(%q) (-want +got):\n%s", tt.in, diff)
			}
			if unq := unquote(t, got); unq != tt.in {
				t.Errorf("unquote(quote(%q)) = %q", tt.in, unq)
			}
		})
	}
}

// unquote reads one word the way GRUB's lexer does for single quotes and
// backslash escapes, and fails on anything else that is syntax.
func unquote(t *testing.T, w string) string {
	t.Helper()
	var b strings.Builder
	for i := 0; i < len(w); i++ {
		switch c := w[i]; c {
		case '\'':
			j := strings.IndexByte(w[i+1:], '\'')
			if j < 0 {
				t.Fatalf("word %q: unterminated quote", w)
			}
			b.WriteString(w[i+1 : i+1+j])
			i += j + 1
		case '\\':
			if i+1 >= len(w) {
				t.Fatalf("word %q: trailing backslash", w)
			}
			b.WriteByte(w[i+1])
			i++
		default:
			if strings.IndexByte(" \t\n;|&${}<>\"", c) >= 0 {
				t.Fatalf("word %q: unquoted %q", w, c)
			}
			b.WriteByte(c)
		}
	}
	return b.String()
}

// splitWords splits a line into GRUB words: quoted runs hold spaces.
func splitWords(t *testing.T, line string) []string {
	t.Helper()
	var words []string
	var cur strings.Builder
	in := false
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case c == '\'':
			in = !in
			cur.WriteByte(c)
		case c == '\\' && !in && i+1 < len(line):
			cur.WriteByte(c)
			cur.WriteByte(line[i+1])
			i++
		case c == ' ' && !in:
			if cur.Len() > 0 {
				words = append(words, cur.String())
				cur.Reset()
			}
		default:
			cur.WriteByte(c)
		}
	}
	if in {
		t.Fatalf("line %q: unterminated quote", line)
	}
	if cur.Len() > 0 {
		words = append(words, cur.String())
	}
	return words
}

func FuzzConfig(f *testing.F) {
	f.Add("netboot", "n-1", "host", "http://10.0.0.1/k", "/i", "console=ttyS0")
	f.Add("netboot", "n'1", "evil\nshell", "http://10.0.0.1/k'", "/i", "a='b c'")
	f.Add("local", "${x}", "a || shell", "", "", "")
	f.Add("netboot", "}", "{", "http://[::1]:80/a%20b", "http://h/%0a", "x\ry")
	// The local boot's loader search is the same text for every node:
	// it carries no plan data, so its lines are allowed as they are.
	fixed := map[string]bool{}
	for _, a := range []boot.Arch{boot.ArchX86_64, boot.ArchAArch64} {
		b, err := Config(boot.Plan{Action: boot.ActionLocal, Node: "n", Hostname: "h", Arch: a})
		if err != nil {
			f.Fatal(err)
		}
		for _, l := range strings.Split(string(b), "\n") {
			if l != "" && !strings.HasPrefix(l, "echo ") && !strings.HasPrefix(l, "#") && l != "exit" {
				fixed[l] = true
			}
		}
	}
	f.Fuzz(func(t *testing.T, action, node, host, kernel, initrd, cmdline string) {
		p := boot.Plan{Action: boot.Action(action), Node: node, Hostname: host, Kernel: kernel, Cmdline: cmdline}
		if initrd != "" {
			p.Initrds = []string{initrd}
		}
		got, err := Config(p)
		if err != nil {
			return
		}
		// Every line is one of ours, and every word after the command
		// is a single literal once GRUB has read its quotes.
		allowed := map[string]bool{"#": true, "echo": true, "exit": true, "set": true, "menuentry": true,
			"linux": true, "initrd": true, "}": true, "sleep": true}
		lines := strings.Split(strings.TrimSuffix(string(got), "\n"), "\n")
		for _, l := range lines {
			if fixed[l] {
				continue
			}
			words := splitWords(t, strings.TrimSpace(l))
			if len(words) == 0 || !allowed[words[0]] {
				t.Fatalf("plan %+v: line %q", p, l)
			}
			if words[0] == "#" || words[0] == "set" {
				continue
			}
			for _, w := range words[1:] {
				if w == "{" && words[0] == "menuentry" {
					continue
				}
				unquote(t, w)
			}
		}
		// Local: the header, a message, the six lines of the loader search,
		// a message that it found none, exit.
		want := 10
		if p.Action == boot.ActionNetboot {
			want = 15 - 2*bool2int(len(p.Initrds) == 0)
		}
		if len(lines) != want {
			t.Fatalf("plan %+v: %d lines, want %d:\n%s", p, len(lines), want, got)
		}
	})
}

func bool2int(b bool) int {
	if b {
		return 1
	}
	return 0
}
