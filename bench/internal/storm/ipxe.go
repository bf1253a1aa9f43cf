package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// script is what a simulated iPXE takes from a boot script: the script
// it chains to, or the kernel (with its command line) and initrds it
// boots, or that it boots from its disk (exit).
type script struct {
	chain   string
	kernel  string
	cmdline string
	initrds []string
	exit    bool
}

// parseScript reads the commands of an iPXE script that a boot needs,
// with the settings a node's iPXE would put in (its MAC, hyphen or colon
// form, and its build architecture). Anything else (echo, retry labels,
// the "|| goto" fallbacks) is not a step of a boot that works.
func parseScript(b []byte, mac string) (script, error) {
	if !bytes.HasPrefix(b, []byte("#!ipxe")) {
		return script{}, fmt.Errorf("not an iPXE script: %.40q", b)
	}
	r := strings.NewReplacer("${netX/mac:hexhyp}", strings.ReplaceAll(mac, ":", "-"), "${net0/mac:hexhyp}", strings.ReplaceAll(mac, ":", "-"),
		"${netX/mac}", mac, "${net0/mac}", mac, "${mac}", mac, "${buildarch}", "x86_64")
	var s script
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := r.Replace(strings.TrimSpace(sc.Text()))
		if i := strings.Index(line, "||"); i >= 0 {
			line = strings.TrimSpace(line[:i])
		}
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		args := f[1:]
		for len(args) > 0 && strings.HasPrefix(args[0], "--") {
			if args[0] == "--name" || args[0] == "-n" {
				args = args[1:]
			}
			args = args[1:]
		}
		switch f[0] {
		case "chain", "chainload":
			if len(args) > 0 && s.chain == "" {
				s.chain = args[0]
			}
		case "kernel", "imgexec":
			if len(args) > 0 && s.kernel == "" {
				s.kernel, s.cmdline = args[0], strings.Join(args[1:], " ")
			}
		case "initrd", "module":
			if len(args) > 0 {
				s.initrds = append(s.initrds, args[0])
			}
		case "exit":
			if s.chain == "" && s.kernel == "" {
				s.exit = true
			}
		}
		if s.chain != "" || s.kernel != "" && f[0] == "boot" {
			break
		}
	}
	if s.chain == "" && s.kernel == "" && !s.exit {
		return s, fmt.Errorf("the script boots nothing:\n%s", b)
	}
	return s, nil
}

// fetch GETs u and counts its body, which must be as long as its
// Content-Length says.
func fetch(ctx context.Context, c *http.Client, u string) ([]byte, int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, 0, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, 0, fmt.Errorf("GET %s: %w", u, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
		return nil, 0, fmt.Errorf("GET %s: %s: %s", u, resp.Status, bytes.TrimSpace(msg))
	}
	var body []byte
	var n int64
	if resp.ContentLength >= 0 && resp.ContentLength < 64<<10 {
		body, err = io.ReadAll(resp.Body)
		n = int64(len(body))
	} else {
		n, err = io.Copy(io.Discard, resp.Body)
	}
	if err != nil {
		return nil, n, fmt.Errorf("GET %s: after %d bytes: %w", u, n, err)
	}
	if resp.ContentLength >= 0 && n != resp.ContentLength {
		return nil, n, fmt.Errorf("GET %s: %d bytes of %d", u, n, resp.ContentLength)
	}
	return body, n, nil
}

// cmdlineValue is key's value on a kernel command line.
func cmdlineValue(cmdline, key string) string {
	for _, f := range strings.Fields(cmdline) {
		if v, ok := strings.CutPrefix(f, key+"="); ok {
			return v
		}
	}
	return ""
}
