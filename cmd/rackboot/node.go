package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/rackboot/rackboot/api"
)

// client talks to a running rackboot's API.
type client struct {
	server, token, output string
	tokenFile             func() string
	http                  *http.Client
}

func clientFlags(fs *flag.FlagSet) *client {
	c := &client{http: &http.Client{Timeout: 30 * time.Second}}
	fs.StringVar(&c.server, "server", envOr("RACKBOOT_SERVER", "http://127.0.0.1:8080"), "rackboot server URL (env RACKBOOT_SERVER)")
	fs.StringVar(&c.token, "token", os.Getenv("RACKBOOT_TOKEN"), "API token (env RACKBOOT_TOKEN; default: the admin token in --data-dir)")
	fs.StringVar(&c.output, "output", "table", "output format: table or json")
	dataDir := fs.String("data-dir", envOr("RACKBOOT_DATA_DIR", "data"), "data dir to read admin.token from when no token is given")
	c.tokenFile = func() string { return filepath.Join(*dataDir, "admin.token") }
	return c
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func (c *client) do(ctx context.Context, method, path string, body, out any) error {
	if c.token == "" {
		if b, err := os.ReadFile(c.tokenFile()); err == nil {
			c.token = strings.TrimSpace(string(b))
		}
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(c.server, "/")+path, rd)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if resp.StatusCode >= 300 {
		var e api.Error
		if json.Unmarshal(b, &e) == nil && e.Error != "" {
			return fmt.Errorf("%s %s: %s (%d)", method, path, e.Error, resp.StatusCode)
		}
		return fmt.Errorf("%s %s: %s", method, path, resp.Status)
	}
	return json.Unmarshal(b, out)
}

func (c *client) print(w io.Writer, v any, table func(*tabwriter.Writer)) error {
	switch c.output {
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	case "table":
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		table(tw)
		return tw.Flush()
	}
	return usageError{fmt.Sprintf("--output %q: want table or json", c.output)}
}

func nodeCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usageError{"node: want list, show, trace or set"}
	}
	sub, args := args[0], args[1:]
	fs := flag.NewFlagSet("node "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	c := clientFlags(fs)
	secureBoot := ""
	if sub == "set" {
		fs.StringVar(&secureBoot, "secure-boot", "", "on, off or inherit (the subnet's setting)")
	}
	// Let the node reference come before or after the flags.
	var ref string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		ref, args = args[0], args[1:]
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if ref == "" && fs.NArg() > 0 {
		ref = fs.Arg(0)
	}
	if sub != "list" && ref == "" {
		return usageError{"node " + sub + ": which node? (id, name or MAC)"}
	}
	switch sub {
	case "list":
		var nodes []api.Node
		if err := c.do(ctx, "GET", "/api/v1/nodes", nil, &nodes); err != nil {
			return err
		}
		return c.print(stdout, nodes, func(tw *tabwriter.Writer) {
			fmt.Fprintln(tw, "ID\tNAME\tSTATE\tARCH\tFIRMWARE\tMACS\tLAST SEEN")
			for _, n := range nodes {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", n.ID, n.Name, n.State, n.Arch, n.Firmware, strings.Join(n.MACs, ","), n.LastSeen.Format(time.RFC3339))
			}
		})
	case "show":
		var n api.Node
		if err := c.do(ctx, "GET", "/api/v1/nodes/"+url.PathEscape(ref), nil, &n); err != nil {
			return err
		}
		return c.print(stdout, n, func(tw *tabwriter.Writer) { showNode(tw, n) })
	case "trace":
		var tr api.Trace
		if err := c.do(ctx, "GET", "/api/v1/nodes/"+url.PathEscape(ref)+"/trace", nil, &tr); err != nil {
			return err
		}
		return c.print(stdout, tr, func(tw *tabwriter.Writer) { showTrace(tw, tr) })
	case "set":
		if secureBoot == "" {
			return usageError{"node set: nothing to set (--secure-boot on|off|inherit)"}
		}
		var n api.Node
		if err := c.do(ctx, "PATCH", "/api/v1/nodes/"+url.PathEscape(ref), api.NodePatch{SecureBoot: &secureBoot}, &n); err != nil {
			return err
		}
		return c.print(stdout, n, func(tw *tabwriter.Writer) { showNode(tw, n) })
	}
	return usageError{fmt.Sprintf("node: unknown command %q", sub)}
}

func showNode(tw *tabwriter.Writer, n api.Node) {
	sb := "inherit"
	if n.SecureBoot != nil {
		sb = map[bool]string{true: "on", false: "off"}[*n.SecureBoot]
	}
	for _, kv := range [][2]string{
		{"ID", n.ID}, {"Name", n.Name}, {"State", n.State}, {"Arch", n.Arch}, {"Firmware", n.Firmware},
		{"Last client type", n.ClientArch}, {"Secure Boot path", sb}, {"UUID", n.UUID},
		{"MACs", strings.Join(n.MACs, ", ")}, {"First seen", n.FirstSeen.Format(time.RFC3339)}, {"Last seen", n.LastSeen.Format(time.RFC3339)},
	} {
		fmt.Fprintf(tw, "%s:\t%s\n", kv[0], kv[1])
	}
}

func showTrace(tw *tabwriter.Writer, tr api.Trace) {
	if len(tr.Boots) == 0 {
		fmt.Fprintf(tw, "node %s has no recorded boots\n", tr.Node)
		return
	}
	for i, b := range tr.Boots {
		fmt.Fprintf(tw, "boot %d at %s\t%s\n", i+1, b.Start.Format(time.RFC3339), b.Client)
		for _, s := range b.Steps {
			mark := "ok"
			if !s.OK {
				mark = "FAIL"
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", s.Time.Format("15:04:05.000"), mark, s.Proto, s.What, s.Detail)
		}
		fmt.Fprintf(tw, "  => %s\n\n", b.Verdict)
	}
}
