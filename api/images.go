package api

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"os"
	"strings"

	"github.com/go-chi/chi/v5"

	"github.com/rackboot/rackboot/boot"
	"github.com/rackboot/rackboot/images/catalog"
	"github.com/rackboot/rackboot/internal/httpserve"
	"github.com/rackboot/rackboot/lifecycle"
	"github.com/rackboot/rackboot/store"
)

// NewImage is the JSON body of POST /api/v1/images for an import from a
// URL. An upload sends the file itself as application/octet-stream with
// the same fields as query parameters (and filename= for the format).
type NewImage struct {
	Name   string `json:"name"`
	Arch   string `json:"arch"`
	URL    string `json:"url"`
	SHA256 string `json:"sha256,omitempty"`
	// Format overrides the one the URL's file name says.
	Format string `json:"format,omitempty"`
}

func (s *Server) createImage(w http.ResponseWriter, r *http.Request) {
	if s.Catalog == nil {
		writeError(w, http.StatusNotImplemented, "not_implemented", "this server keeps no image catalog")
		return
	}
	ctx := r.Context()
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	var nim NewImage
	var imported catalog.Imported
	var err error
	switch ct {
	case "application/json":
		if !decode(w, r, &nim) {
			return
		}
		if err := s.checkNewImage(ctx, nim.Name); err != nil {
			s.failImport(w, r, err)
			return
		}
		// Fetching and converting an image takes minutes.
		httpserve.Long(w)
		imported, err = s.Catalog.ImportURL(ctx, nim.Name, boot.Arch(nim.Arch), nim.Format, nim.URL, nim.SHA256)
	case "application/octet-stream":
		q := r.URL.Query()
		nim = NewImage{Name: q.Get("name"), Arch: q.Get("arch"), SHA256: q.Get("sha256"), Format: q.Get("format")}
		if nim.Format == "" {
			if nim.Format, err = catalog.FormatOf(q.Get("filename")); err != nil {
				s.failImport(w, r, err)
				return
			}
		}
		if err := s.checkNewImage(ctx, nim.Name); err != nil {
			s.failImport(w, r, err)
			return
		}
		// An upload of gigabytes takes minutes.
		httpserve.Long(w)
		imported, err = s.Catalog.Import(ctx, nim.Name, boot.Arch(nim.Arch), nim.Format, r.Body, nim.SHA256, "upload:"+q.Get("filename"))
	default:
		writeError(w, http.StatusUnsupportedMediaType, "bad_request", "send application/json (an import from a URL) or application/octet-stream (the file)")
		return
	}
	if err != nil {
		s.failImport(w, r, err)
		return
	}
	im := store.Image{Name: imported.Name, Arch: imported.Arch, Format: imported.Format, Size: imported.Size, SHA256: imported.SHA256,
		RawSize: imported.RawSize, RawSHA256: imported.RawSHA256, Source: imported.Source}
	if err := s.Store.CreateImage(ctx, im); err != nil {
		s.Catalog.Remove(imported.Name, imported.Format)
		s.fail(w, r, err)
		return
	}
	im, err = s.Store.Image(ctx, im.Name)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, imageFrom(im))
}

// checkNewImage refuses a name already in the catalog before a long
// upload or download, not after.
func (s *Server) checkNewImage(ctx context.Context, name string) error {
	if _, err := s.Store.Image(ctx, name); err == nil {
		return fmt.Errorf("image %q exists: %w", name, store.ErrConflict)
	} else if !errors.Is(err, store.ErrNotFound) {
		return err
	}
	return nil
}

func (s *Server) failImport(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, catalog.ErrRefused):
		writeError(w, http.StatusBadRequest, "bad_request", err.Error())
	case errors.Is(err, os.ErrExist):
		writeError(w, http.StatusConflict, "conflict", err.Error())
	case errors.Is(err, catalog.ErrBusy):
		w.Header().Set("Retry-After", "60")
		writeError(w, http.StatusServiceUnavailable, "busy", err.Error())
	default:
		s.fail(w, r, err)
	}
}

// ImageFiles serves the catalog's files at /images/{name}, with Range
// and an ETag of their sha256, for agents writing them to disks. It is on
// the boot port (sendfile) but, unlike the loaders and kernels there, not
// for anyone: an image may hold a tenant's software. It takes an API
// credential (any role), the agent token of a node whose deploy of that
// very image is running, or that deploy's image token. With imageTokens
// set (the boot port of a server whose API has a TLS port of its own) it
// takes image tokens only: they read one file while one deploy runs, so
// unlike the credentials they may cross the network in clear.
func (s *Server) ImageFiles(imageTokens bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := strings.TrimPrefix(r.URL.Path, "/images/")
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", "GET or HEAD")
			return
		}
		if s.Catalog == nil || !catalog.ValidName(name) {
			http.NotFound(w, r)
			return
		}
		if !s.mayReadImage(w, r, name, imageTokens) {
			return
		}
		im, err := s.Store.Image(r.Context(), name)
		if err != nil {
			http.NotFound(w, r)
			return
		}
		path, err := s.Catalog.Path(im.Name, im.Format)
		if err != nil {
			http.NotFound(w, r)
			return
		}
		f, err := os.Open(path)
		if err != nil {
			s.log().Error("image file", "image", name, "err", err)
			http.NotFound(w, r)
			return
		}
		defer f.Close()
		st, err := f.Stat()
		if err != nil {
			http.NotFound(w, r)
			return
		}
		httpserve.File(w, r, f, st.ModTime(), `"`+im.SHA256+`"`)
	})
}

// mayReadImage answers the refusal itself when the request may not read
// image name.
func (s *Server) mayReadImage(w http.ResponseWriter, r *http.Request, name string, imageTokensOnly bool) bool {
	if bearer, found := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); found && strings.HasPrefix(bearer, lifecycle.ImageTokenPrefix) {
		ok, err := s.imageTokenReads(r.Context(), bearer, name)
		if err != nil {
			s.fail(w, r, err)
			return false
		}
		if !ok {
			writeError(w, http.StatusForbidden, "forbidden", "the image token is not that of a running deploy of "+name)
		}
		return ok
	}
	if imageTokensOnly {
		unauthorized(w, false, "on the boot port an image file needs the image token of a running deploy; with a credential, fetch it from the API's TLS port")
		return false
	}
	p, present, ok, err := s.authenticate(r)
	if err != nil {
		s.fail(w, r, err)
		return false
	}
	if !ok {
		unauthorized(w, present, "an image file needs an API token (Authorization: Bearer ...) or the agent token of a node deploying it")
		return false
	}
	if rank(p.Role) > 0 {
		return true // a person's credential, of any role
	}
	if p.Role != store.RoleAgent {
		// A hypervisor's agent reads no images.
		writeError(w, http.StatusForbidden, "forbidden", "this credential reads no image files")
		return false
	}
	running, err := s.Store.Tasks(r.Context(), store.TaskFilter{NodeID: p.NodeID, State: store.TaskRunning})
	if err != nil {
		s.fail(w, r, err)
		return false
	}
	for _, t := range running {
		var params struct {
			Image string `json:"image"`
		}
		if t.Kind == "deploy" && json.Unmarshal(t.Params, &params) == nil && params.Image == name {
			return true
		}
	}
	writeError(w, http.StatusForbidden, "forbidden", "node "+p.NodeID+" is not deploying image "+name)
	return false
}

// imageTokenReads says whether tok is the image token of a running
// deploy of image name.
func (s *Server) imageTokenReads(ctx context.Context, tok, name string) (bool, error) {
	running, err := s.Store.Tasks(ctx, store.TaskFilter{State: store.TaskRunning})
	if err != nil {
		return false, err
	}
	for _, t := range running {
		var params struct {
			Image      string `json:"image"`
			ImageToken string `json:"image_token"`
		}
		if t.Kind == "deploy" && json.Unmarshal(t.Params, &params) == nil && params.Image == name && params.ImageToken != "" &&
			subtle.ConstantTimeCompare([]byte(params.ImageToken), []byte(tok)) == 1 {
			return true, nil
		}
	}
	return false, nil
}

func (s *Server) deleteImageFile(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	name := chi.URLParam(r, "name")
	im, err := s.Store.Image(ctx, name)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if err := s.Store.DeleteImage(ctx, name); err != nil {
		s.fail(w, r, err)
		return
	}
	if s.Catalog != nil {
		if err := s.Catalog.Remove(im.Name, im.Format); err != nil {
			s.log().Error("remove image file", "image", name, "err", err)
		}
	}
	w.WriteHeader(http.StatusNoContent)
}
