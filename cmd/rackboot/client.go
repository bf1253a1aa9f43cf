package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/rackboot/rackboot/api"
	"github.com/rackboot/rackboot/appliance"
	"github.com/rackboot/rackboot/internal/tlspin"
)

// client talks to a running rackboot's API. Server and token come from
// flags, else the environment, else the client config file, else (the
// token) the admin token in the data dir.
type client struct {
	server, token, output, config, dataDir string
	caFile, acceptPin                      string
	http                                   *http.Client
	// ask asks the person at the terminal to trust a server; nil when
	// nobody is there.
	ask asker
	// saveOnSuccess remembers an accepted fingerprint once the server
	// has shown it; mismatch explains a certificate that is not the one
	// remembered.
	saveOnSuccess func() error
	mismatch      string
	resolved      bool
}

// clientConfig is the client config file: ~/.config/rackboot/client.yaml
// or the file RACKBOOT_CONFIG names.
type clientConfig struct {
	Server string `yaml:"server"`
	Token  string `yaml:"token"`
	CAFile string `yaml:"ca_file"`
}

const clientHelp = `Client commands find the server and token in --server and --token, else
RACKBOOT_SERVER and RACKBOOT_TOKEN, else the file RACKBOOT_CONFIG (default
~/.config/rackboot/client.yaml: "server: URL", "token: TOKEN" and
"ca_file: FILE" lines), else the API that DATA_DIR/api.url names (written by
rackboot serve --api-addr) or http://127.0.0.1:8080, and the admin token in
--data-dir. --output table|json.
` + trustHelp

func clientFlags(fs *flag.FlagSet) *client {
	c := &client{http: &http.Client{Timeout: 60 * time.Second}, ask: terminalAsker(fs.Output())}
	fs.StringVar(&c.server, "server", "", "rackboot server URL (env RACKBOOT_SERVER; default: DATA_DIR/api.url, else http://127.0.0.1:8080)")
	fs.StringVar(&c.caFile, "ca-file", "", "trust an https server whose certificate this PEM CA bundle signed")
	fs.StringVar(&c.acceptPin, "accept-fingerprint", "", "trust an https server by its certificate's fingerprint (sha256:HEX, from rackboot serve's log) and remember it")
	fs.StringVar(&c.token, "token", "", "API token (env RACKBOOT_TOKEN; default: the config file's, else DATA_DIR/admin.token)")
	fs.StringVar(&c.output, "output", "table", "output format: table or json")
	fs.StringVar(&c.dataDir, "data-dir", envOr("RACKBOOT_DATA_DIR", "data"), "data dir to read admin.token from when no token is given")
	return c
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// resolve fills the server and token from the environment and files,
// and decides how an https server is trusted.
func (c *client) resolve(ctx context.Context) error {
	if c.resolved {
		return nil
	}
	if c.server == "" {
		c.server = os.Getenv("RACKBOOT_SERVER")
	}
	if c.token == "" {
		c.token = os.Getenv("RACKBOOT_TOKEN")
	}
	if c.server == "" || c.token == "" {
		path := os.Getenv("RACKBOOT_CONFIG")
		explicit := path != ""
		if !explicit {
			if home, err := os.UserHomeDir(); err == nil {
				path = filepath.Join(home, ".config", "rackboot", "client.yaml")
			}
		}
		if path != "" {
			b, err := os.ReadFile(path)
			switch {
			case err == nil:
				var cc clientConfig
				if err := yaml.Unmarshal(b, &cc); err != nil {
					return fmt.Errorf("client config %s: %w", path, err)
				}
				if c.server == "" {
					c.server = cc.Server
				}
				if c.token == "" {
					c.token = cc.Token
				}
				if c.caFile == "" {
					c.caFile = cc.CAFile
				}
			case explicit:
				return fmt.Errorf("client config: %w", err)
			}
		}
	}
	if c.server == "" {
		c.server = "http://127.0.0.1:8080"
		if b, err := os.ReadFile(filepath.Join(c.dataDir, appliance.APIURLFile)); err == nil && strings.TrimSpace(string(b)) != "" {
			c.server = strings.TrimSpace(string(b))
		}
	}
	if c.token == "" {
		if b, err := os.ReadFile(filepath.Join(c.dataDir, "admin.token")); err == nil {
			c.token = strings.TrimSpace(string(b))
		}
	}
	if err := c.trust(ctx); err != nil {
		return err
	}
	c.resolved = true
	return nil
}

// apiError is an error answer from the server.
type apiError struct {
	Status int
	api.ErrorDetail
}

func (e *apiError) Error() string { return fmt.Sprintf("%s (%d %s)", e.Message, e.Status, e.Code) }

func (c *client) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	return c.send(ctx, method, path, "application/json", rd, out)
}

func (c *client) send(ctx context.Context, method, path, contentType string, body io.Reader, out any) error {
	if err := c.resolve(ctx); err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(c.server, "/")+path, body)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if body != nil {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if errors.Is(err, tlspin.ErrPin) && c.mismatch != "" {
			return errors.New(c.mismatch)
		}
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	if c.saveOnSuccess != nil {
		if err := c.saveOnSuccess(); err != nil {
			return err
		}
		c.saveOnSuccess = nil
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if resp.StatusCode >= 300 {
		var e api.ErrorBody
		if json.Unmarshal(b, &e) == nil && e.Error.Message != "" {
			return &apiError{Status: resp.StatusCode, ErrorDetail: e.Error}
		}
		return fmt.Errorf("%s %s: %s", method, path, resp.Status)
	}
	if out == nil || resp.StatusCode == http.StatusNoContent {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("%s %s: reading the answer: %w", method, path, err)
	}
	return nil
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

// parseArgs parses a subcommand's flags, letting positional arguments
// come before or after them, and returns the positional ones.
func parseArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		for len(args) > 0 && !strings.HasPrefix(args[0], "-") {
			pos, args = append(pos, args[0]), args[1:]
		}
		if len(args) == 0 {
			return pos, nil
		}
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
	}
}

func ts(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format("2006-01-02 15:04:05")
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
