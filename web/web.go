// Package web is the technicians' web UI: a single-page application of
// plain HTML, CSS and ES modules, embedded in the binary and served under
// /ui/. It has no build step and loads nothing from outside the
// appliance. It talks only to the JSON API under /api/v1 (package api),
// with the session cookie and the CSRF token that API hands out.
//
// The appliance mounts it as
//
//	mux.Handle("/ui/", web.Handler())
//
// and redirects / to /ui/. Pages are hash routes (/ui/#/nodes/ID), so the
// server only ever serves index.html and its assets.
package web

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"
)

//go:embed static
var static embed.FS

// Prefix is the path the UI is served under.
const Prefix = "/ui/"

// ContentSecurityPolicy is sent with every answer: scripts, styles,
// images and connections only from the appliance itself, no inline
// script, no framing, no plugins.
const ContentSecurityPolicy = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// contentTypes are the types of the files the UI ships; a file of any
// other kind is not served.
var contentTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".svg":  "image/svg+xml",
	".png":  "image/png",
	".ico":  "image/x-icon",
	".json": "application/json",
}

type asset struct {
	body  []byte
	ctype string
	etag  string
}

type handler struct {
	files map[string]asset // by path below Prefix, "index.html" for the root
}

// Handler serves the UI. It expects request paths under /ui/ (as mounted
// above; a path without the prefix is taken as relative to it). /ui/ is
// index.html; every other path is a file or 404: there are no directory
// listings.
func Handler() http.Handler {
	sub, err := fs.Sub(static, "static")
	if err != nil {
		panic("web: embedded assets: " + err.Error())
	}
	h := &handler{files: map[string]asset{}}
	err = fs.WalkDir(sub, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		ctype, ok := contentTypes[path.Ext(p)]
		if !ok {
			return nil
		}
		b, err := fs.ReadFile(sub, p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		h.files[p] = asset{body: b, ctype: ctype, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
		return nil
	})
	if err != nil {
		panic("web: embedded assets: " + err.Error())
	}
	return h
}

func setSecurityHeaders(hd http.Header) {
	hd.Set("Content-Security-Policy", ContentSecurityPolicy)
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("X-Frame-Options", "DENY")
	hd.Set("Referrer-Policy", "no-referrer")
	hd.Set("Cross-Origin-Opener-Policy", "same-origin")
	hd.Set("Cross-Origin-Resource-Policy", "same-origin")
	hd.Set("Permissions-Policy", "camera=(), microphone=(), geolocation=(), usb=(), serial=()")
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	setSecurityHeaders(w.Header())
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	p := r.URL.Path
	if rest, ok := strings.CutPrefix(p, Prefix); ok {
		p = rest
	} else if p == strings.TrimSuffix(Prefix, "/") {
		p = ""
	} else {
		p = strings.TrimPrefix(p, "/")
	}
	if p == "" {
		p = "index.html"
	}
	a, ok := h.files[p]
	if !ok || strings.Contains(p, "..") || strings.HasSuffix(p, "/") {
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", a.ctype)
	w.Header().Set("ETag", a.etag)
	// Revalidate every time: an upgraded appliance must not run a
	// stale mix of old and new modules.
	w.Header().Set("Cache-Control", "no-cache")
	http.ServeContent(w, r, p, time.Time{}, bytes.NewReader(a.body))
}
