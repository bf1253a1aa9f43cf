// Package baremetal is a client of OpenStack Ironic's REST API (the
// "baremetal" service), as much of it as rackboot uses to hand nodes to
// Ironic and take them back: nodes, their ports, provision states. It
// authenticates through Keystone (a password or an application
// credential) or not at all (standalone Ironic, auth_strategy = noauth).
package baremetal

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// APIVersion is the microversion rackboot asks for: 1.75 has the node
// fields it reads (conductor since 1.49, boot_mode since 1.75); Ironic
// 21.1 (Zed, Debian bookworm's) serves up to 1.80.
const APIVersion = "1.75"

// ErrNotFound is a node or port Ironic does not have.
var ErrNotFound = errors.New("not found in Ironic")

// Error is an answer of Ironic's other than success.
type Error struct {
	Op     string
	Status int
	// Message is Ironic's faultstring, or the body when it has none.
	Message string
}

func (e *Error) Error() string {
	return fmt.Sprintf("ironic %s: %d %s", e.Op, e.Status, e.Message)
}

// Unwrap makes a 404 ErrNotFound.
func (e *Error) Unwrap() error {
	if e.Status == http.StatusNotFound {
		return ErrNotFound
	}
	return nil
}

// AuthError is Keystone refusing rackboot a token.
type AuthError struct {
	Status  int
	Message string
}

func (e *AuthError) Error() string {
	return fmt.Sprintf("keystone token: %d %s", e.Status, e.Message)
}

// Client talks to one Ironic API endpoint.
type Client struct {
	// URL is the API's root, e.g. http://ironic:6385 (without /v1).
	URL string
	// Auth gives the token of each request; nil sends none.
	Auth Auth
	// HTTP is the HTTP client (default: one with a 30 s timeout).
	HTTP *http.Client
}

// Auth is a source of Keystone tokens.
type Auth interface {
	// Token returns a valid token; renew says the last one was refused.
	Token(ctx context.Context, renew bool) (string, error)
}

// Node is an Ironic node, the fields rackboot reads and writes.
type Node struct {
	UUID           string         `json:"uuid,omitempty"`
	Name           string         `json:"name,omitempty"`
	Driver         string         `json:"driver,omitempty"`
	DriverInfo     map[string]any `json:"driver_info,omitempty"`
	Properties     map[string]any `json:"properties,omitempty"`
	ProvisionState string         `json:"provision_state,omitempty"`
	PowerState     *string        `json:"power_state,omitempty"`
	Maintenance    bool           `json:"maintenance,omitempty"`
	Conductor      string         `json:"conductor,omitempty"`
	ConductorGroup string         `json:"conductor_group,omitempty"`
	BootMode       *string        `json:"boot_mode,omitempty"`
	BootInterface  string         `json:"boot_interface,omitempty"`
	Extra          map[string]any `json:"extra,omitempty"`
	// LastError is Ironic's last_error.
	LastError *string `json:"last_error,omitempty"`
}

// Port is one of a node's NICs.
type Port struct {
	UUID       string `json:"uuid,omitempty"`
	Address    string `json:"address"`
	NodeUUID   string `json:"node_uuid"`
	PXEEnabled *bool  `json:"pxe_enabled,omitempty"`
}

// Provision states rackboot tells apart.
const (
	StateEnroll     = "enroll"
	StateManageable = "manageable"
	StateAvailable  = "available"
)

func (c *Client) http() *http.Client {
	if c.HTTP != nil {
		return c.HTTP
	}
	return &http.Client{Timeout: 30 * time.Second}
}

// do sends one request and decodes a JSON answer into out (nil: none).
// A token Keystone refused is renewed once.
func (c *Client) do(ctx context.Context, op, method, path string, in, out any) error {
	var body []byte
	if in != nil {
		var err error
		if body, err = json.Marshal(in); err != nil {
			return fmt.Errorf("ironic %s: %w", op, err)
		}
	}
	for try := 0; ; try++ {
		req, err := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(c.URL, "/")+path, bytes.NewReader(body))
		if err != nil {
			return fmt.Errorf("ironic %s: %w", op, err)
		}
		req.Header.Set("Accept", "application/json")
		req.Header.Set("X-OpenStack-Ironic-API-Version", APIVersion)
		if in != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		if c.Auth != nil {
			tok, err := c.Auth.Token(ctx, try > 0)
			if err != nil {
				return fmt.Errorf("ironic %s: %w", op, err)
			}
			req.Header.Set("X-Auth-Token", tok)
		}
		resp, err := c.http().Do(req)
		if err != nil {
			return fmt.Errorf("ironic %s: %w", op, err)
		}
		b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
		resp.Body.Close()
		if err != nil {
			return fmt.Errorf("ironic %s: read the answer: %w", op, err)
		}
		if resp.StatusCode == http.StatusUnauthorized && c.Auth != nil && try == 0 {
			continue
		}
		if resp.StatusCode >= 300 {
			return &Error{Op: op, Status: resp.StatusCode, Message: faultString(b)}
		}
		if out == nil || len(b) == 0 {
			return nil
		}
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("ironic %s: the answer is not the JSON expected: %w", op, err)
		}
		return nil
	}
}

// faultString is the message of an Ironic error body:
// {"error_message": "{\"faultstring\": \"...\", ...}"}, the inner
// document a JSON string of its own.
func faultString(b []byte) string {
	var outer struct {
		ErrorMessage json.RawMessage `json:"error_message"`
	}
	if json.Unmarshal(b, &outer) == nil && len(outer.ErrorMessage) > 0 {
		var inner struct {
			FaultString string `json:"faultstring"`
		}
		var s string
		if json.Unmarshal(outer.ErrorMessage, &s) == nil {
			if json.Unmarshal([]byte(s), &inner) == nil && inner.FaultString != "" {
				return inner.FaultString
			}
			return s
		}
		if json.Unmarshal(outer.ErrorMessage, &inner) == nil && inner.FaultString != "" {
			return inner.FaultString
		}
	}
	s := strings.TrimSpace(string(b))
	if len(s) > 300 {
		s = s[:300] + "..."
	}
	return s
}

// CreateNode creates a node (in state enroll).
func (c *Client) CreateNode(ctx context.Context, n Node) (Node, error) {
	var out Node
	err := c.do(ctx, "create node", http.MethodPost, "/v1/nodes", n, &out)
	return out, err
}

// Node returns a node by UUID or name.
func (c *Client) Node(ctx context.Context, ident string) (Node, error) {
	var out Node
	err := c.do(ctx, "get node "+ident, http.MethodGet, "/v1/nodes/"+url.PathEscape(ident), nil, &out)
	return out, err
}

// DeleteNode deletes a node and its ports.
func (c *Client) DeleteNode(ctx context.Context, ident string) error {
	return c.do(ctx, "delete node "+ident, http.MethodDelete, "/v1/nodes/"+url.PathEscape(ident), nil, nil)
}

// CreatePort adds a NIC to a node.
func (c *Client) CreatePort(ctx context.Context, p Port) (Port, error) {
	var out Port
	err := c.do(ctx, "create port "+p.Address, http.MethodPost, "/v1/ports", p, &out)
	return out, err
}

// PortByAddress returns the port of a MAC, or ErrNotFound.
func (c *Client) PortByAddress(ctx context.Context, mac string) (Port, error) {
	var out struct {
		Ports []Port `json:"ports"`
	}
	q := url.Values{"address": {mac}, "detail": {"True"}}
	if err := c.do(ctx, "find port "+mac, http.MethodGet, "/v1/ports?"+q.Encode(), nil, &out); err != nil {
		return Port{}, err
	}
	if len(out.Ports) == 0 {
		return Port{}, fmt.Errorf("ironic find port %s: %w", mac, ErrNotFound)
	}
	return out.Ports[0], nil
}

// Ports lists every port, following Ironic's pages.
func (c *Client) Ports(ctx context.Context) ([]Port, error) {
	var all []Port
	path := "/v1/ports?limit=1000&fields=uuid,address,node_uuid,pxe_enabled"
	for path != "" {
		var page struct {
			Ports []Port `json:"ports"`
			Next  string `json:"next"`
		}
		if err := c.do(ctx, "list ports", http.MethodGet, path, nil, &page); err != nil {
			return nil, err
		}
		all = append(all, page.Ports...)
		next, err := nextPage("/v1/ports", path, page.Next, len(page.Ports))
		if err != nil {
			return nil, fmt.Errorf("ironic list ports: %w", err)
		}
		path = next
	}
	return all, nil
}

// Nodes lists every node, in detail, following Ironic's pages. Detail
// and not a fields list: Ironic 21 computes conductor, which a fields
// list cannot name (500 "type object 'Node' has no attribute
// 'conductor'").
func (c *Client) Nodes(ctx context.Context) ([]Node, error) {
	var all []Node
	path := "/v1/nodes?detail=True&limit=200"
	for path != "" {
		var page struct {
			Nodes []Node `json:"nodes"`
			Next  string `json:"next"`
		}
		if err := c.do(ctx, "list nodes", http.MethodGet, path, nil, &page); err != nil {
			return nil, err
		}
		all = append(all, page.Nodes...)
		next, err := nextPage("/v1/nodes", path, page.Next, len(page.Nodes))
		if err != nil {
			return nil, fmt.Errorf("ironic list nodes: %w", err)
		}
		path = next
	}
	return all, nil
}

// nextPage is the request of Ironic's next link: the resource's path
// under Client.URL with the link's query (its marker), not the link's own
// path, which names Ironic as Ironic sees itself (behind a proxy, or under
// a path such as /baremetal, it is not where rackboot reaches it). ""
// ends the list: no link, an empty page, or a link that asks for the
// page just read, so a server that always links cannot loop.
func nextPage(resource, current, next string, got int) (string, error) {
	if next == "" || got == 0 {
		return "", nil
	}
	u, err := url.Parse(next)
	if err != nil {
		return "", fmt.Errorf("next page %q: %w", next, err)
	}
	p := resource + "?" + u.RawQuery
	if p == current {
		return "", nil
	}
	return p, nil
}

// SetProvisionState asks for a provision state change (manage, provide,
// ...): Ironic answers at once and moves the node on its own.
func (c *Client) SetProvisionState(ctx context.Context, ident, target string) error {
	return c.do(ctx, "provision "+ident+" "+target, http.MethodPut, "/v1/nodes/"+url.PathEscape(ident)+"/states/provision",
		map[string]string{"target": target}, nil)
}

// Keystone is Keystone v3 authentication, with a password or an
// application credential. Its tokens are kept until shortly before they
// expire.
type Keystone struct {
	// AuthURL is Keystone's, e.g. http://keystone:5000/v3.
	AuthURL string
	// A password: Username, Password, UserDomain (default "Default"),
	// Project, ProjectDomain (default "Default").
	Username, Password, UserDomain, Project, ProjectDomain string
	// Or an application credential.
	AppCredentialID, AppCredentialSecret string
	HTTP                                 *http.Client

	mu      sync.Mutex
	token   string
	expires time.Time
}

// Token implements Auth.
func (k *Keystone) Token(ctx context.Context, renew bool) (string, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if !renew && k.token != "" && time.Until(k.expires) > time.Minute {
		return k.token, nil
	}
	var ident map[string]any
	scope := map[string]any(nil)
	if k.AppCredentialID != "" {
		ident = map[string]any{"methods": []string{"application_credential"},
			"application_credential": map[string]any{"id": k.AppCredentialID, "secret": k.AppCredentialSecret}}
	} else {
		ident = map[string]any{"methods": []string{"password"}, "password": map[string]any{"user": map[string]any{
			"name": k.Username, "password": k.Password, "domain": map[string]any{"name": or(k.UserDomain, "Default")}}}}
		if k.Project != "" {
			scope = map[string]any{"project": map[string]any{"name": k.Project, "domain": map[string]any{"name": or(k.ProjectDomain, "Default")}}}
		}
	}
	auth := map[string]any{"identity": ident}
	if scope != nil {
		auth["scope"] = scope
	}
	body, _ := json.Marshal(map[string]any{"auth": auth})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(k.AuthURL, "/")+"/auth/tokens", bytes.NewReader(body))
	if err != nil {
		return "", fmt.Errorf("keystone token: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	hc := k.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: 30 * time.Second}
	}
	resp, err := hc.Do(req)
	if err != nil {
		return "", fmt.Errorf("keystone token: %w", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusCreated {
		return "", &AuthError{Status: resp.StatusCode, Message: faultString(b)}
	}
	var out struct {
		Token struct {
			ExpiresAt time.Time `json:"expires_at"`
		} `json:"token"`
	}
	if err := json.Unmarshal(b, &out); err != nil {
		return "", fmt.Errorf("keystone token: %w", err)
	}
	tok := resp.Header.Get("X-Subject-Token")
	if tok == "" {
		return "", errors.New("keystone token: no X-Subject-Token in the answer")
	}
	k.token, k.expires = tok, out.Token.ExpiresAt
	return tok, nil
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
