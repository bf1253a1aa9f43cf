package web

import (
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

func serve(t *testing.T, method, path string, hdr map[string]string) *http.Response {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle(Prefix, Handler())
	req := httptest.NewRequest(method, path, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, req)
	return rec.Result()
}

func body(t *testing.T, r *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(r.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestServes(t *testing.T) {
	for _, tc := range []struct {
		path, ctype, contains string
	}{
		{"/ui/", "text/html; charset=utf-8", `<script type="module" src="app.js">`},
		{"/ui/index.html", "text/html; charset=utf-8", "<title>rackboot</title>"},
		{"/ui/app.js", "text/javascript; charset=utf-8", "import"},
		{"/ui/node.js", "text/javascript; charset=utf-8", "export function nodePage"},
		{"/ui/vms.js", "text/javascript; charset=utf-8", "export function hypervisorsPage"},
		{"/ui/app.css", "text/css; charset=utf-8", ":root"},
		{"/ui/favicon.svg", "image/svg+xml", "<svg"},
	} {
		t.Run(tc.path, func(t *testing.T) {
			r := serve(t, "GET", tc.path, nil)
			if r.StatusCode != 200 {
				t.Fatalf("status %d", r.StatusCode)
			}
			if got := r.Header.Get("Content-Type"); got != tc.ctype {
				t.Errorf("Content-Type %q, want %q", got, tc.ctype)
			}
			if b := body(t, r); !strings.Contains(b, tc.contains) {
				t.Errorf("body lacks %q", tc.contains)
			}
			if r.Header.Get("ETag") == "" {
				t.Error("no ETag")
			}
		})
	}
}

func TestSecurityHeaders(t *testing.T) {
	for _, path := range []string{"/ui/", "/ui/app.js", "/ui/nope.js"} {
		r := serve(t, "GET", path, nil)
		csp := r.Header.Get("Content-Security-Policy")
		for _, want := range []string{"default-src 'self'", "script-src 'self'", "frame-ancestors 'none'", "object-src 'none'"} {
			if !strings.Contains(csp, want) {
				t.Errorf("%s: CSP %q lacks %q", path, csp, want)
			}
		}
		if strings.Contains(csp, "unsafe-inline") || strings.Contains(csp, "unsafe-eval") {
			t.Errorf("%s: CSP allows unsafe code: %q", path, csp)
		}
		for k, want := range map[string]string{
			"X-Content-Type-Options": "nosniff",
			"X-Frame-Options":        "DENY",
			"Referrer-Policy":        "no-referrer",
		} {
			if got := r.Header.Get(k); got != want {
				t.Errorf("%s: %s = %q, want %q", path, k, got, want)
			}
		}
	}
}

func TestNotFound(t *testing.T) {
	for _, path := range []string{
		"/ui/nope.js", "/ui/static/app.js", "/ui/index.htm", "/ui/app.js/", "/ui/nodes/abc",
		"/ui/../web.go", "/ui/%2e%2e/web.go", "/ui/web.go",
	} {
		r := serve(t, "GET", path, nil)
		if r.StatusCode == 200 {
			t.Errorf("%s: status 200, want an error", path)
		}
		if r.StatusCode == 404 && strings.Contains(body(t, r), "<script") {
			t.Errorf("%s: a 404 served a page", path)
		}
	}
}

// A directory is never listed, whatever the path looks like.
func TestNoDirectoryListing(t *testing.T) {
	sub, _ := fs.Sub(static, "static")
	dirs := []string{"/ui/static/", "/ui/static", "/ui/./", "/ui//"}
	fs.WalkDir(sub, ".", func(p string, d fs.DirEntry, err error) error {
		if d.IsDir() && p != "." {
			dirs = append(dirs, "/ui/"+p, "/ui/"+p+"/")
		}
		return nil
	})
	for _, path := range dirs {
		r := serve(t, "GET", path, nil)
		b := body(t, r)
		if strings.Contains(b, "<pre>") || strings.Contains(b, `<a href="app.js">`) {
			t.Errorf("%s: looks like a directory listing: %q", path, b)
		}
		if r.StatusCode == 200 && !strings.Contains(b, "<title>rackboot</title>") {
			t.Errorf("%s: status 200 with %q", path, b)
		}
	}
}

func TestMethodsAndCaching(t *testing.T) {
	if r := serve(t, "POST", "/ui/", nil); r.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST: status %d, want 405", r.StatusCode)
	}
	r := serve(t, "HEAD", "/ui/app.css", nil)
	if r.StatusCode != 200 || body(t, r) != "" {
		t.Errorf("HEAD: status %d", r.StatusCode)
	}
	etag := serve(t, "GET", "/ui/app.css", nil).Header.Get("ETag")
	r = serve(t, "GET", "/ui/app.css", map[string]string{"If-None-Match": etag})
	if r.StatusCode != http.StatusNotModified {
		t.Errorf("If-None-Match: status %d, want 304", r.StatusCode)
	}
	if r := serve(t, "GET", "/ui", nil); r.StatusCode/100 != 3 || r.Header.Get("Location") != "/ui/" {
		t.Errorf("/ui: status %d to %q, want a redirect to /ui/", r.StatusCode, r.Header.Get("Location"))
	}
}

// The UI must work on an appliance with no way out: nothing may load from
// another host, and the CSP forbids inline script and style attributes.
func TestAssetsSelfContained(t *testing.T) {
	sub, _ := fs.Sub(static, "static")
	external := regexp.MustCompile(`(?i)(src|href)\s*=\s*["']?(https?:)?//|@import|url\(\s*["']?(https?:)?//`)
	inline := regexp.MustCompile(`(?i)<script(?:\s+[^>]*)?>\s*[^<\s]|\son[a-z]+\s*=|\sstyle\s*=`)
	fs.WalkDir(sub, ".", func(p string, d fs.DirEntry, err error) error {
		if d.IsDir() {
			return nil
		}
		b, _ := fs.ReadFile(sub, p)
		if m := external.Find(b); m != nil {
			t.Errorf("%s loads from outside: %q", p, m)
		}
		if strings.HasSuffix(p, ".html") {
			if m := inline.Find(b); m != nil {
				t.Errorf("%s has inline code or style: %q", p, m)
			}
		}
		if strings.HasSuffix(p, ".js") && strings.Contains(string(b), "innerHTML") {
			t.Errorf("%s uses innerHTML: text from the API must go in as text", p)
		}
		return nil
	})
}

// Every module a script imports, and every file the page links, is
// served: a typo would only show in a browser otherwise.
func TestReferencesResolve(t *testing.T) {
	h := Handler()
	sub, _ := fs.Sub(static, "static")
	ref := regexp.MustCompile(`(?:from\s+|import\s*\(\s*|src=|href=)["']\.?/?([a-z0-9_.-]+\.(?:js|css|svg))["']`)
	n := 0
	fs.WalkDir(sub, ".", func(p string, d fs.DirEntry, err error) error {
		if d.IsDir() {
			return nil
		}
		b, _ := fs.ReadFile(sub, p)
		for _, m := range ref.FindAllSubmatch(b, -1) {
			n++
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest("GET", Prefix+string(m[1]), nil))
			if rec.Code != 200 {
				t.Errorf("%s refers to %s: status %d", p, m[1], rec.Code)
			}
		}
		return nil
	})
	if n < 10 {
		t.Errorf("found %d references: the pattern no longer matches the sources", n)
	}
}
