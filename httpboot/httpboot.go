// Package httpboot is rackboot's boot-time HTTP server: the iPXE chain
// script and per-node scripts, GRUB configs, the loaders for UEFI HTTP
// boot, and kernels and initrds with Range and ETag. It is unauthenticated,
// as firmware needs, and serves nothing secret. What a node boots comes
// from a Planner; the script text from generator functions.
package httpboot

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/rackboot/rackboot/boot"
)

// Planner says what a node boots now. An unknown MAC is the planner's
// business: it may enroll it.
type Planner interface {
	Plan(ctx context.Context, mac net.HardwareAddr, arch boot.Arch) (boot.Plan, error)
}

// Server serves boot-time HTTP.
type Server struct {
	Planner Planner
	// IPXEScript and GRUBConfig write a plan as a script or config.
	IPXEScript func(boot.Plan) ([]byte, error)
	GRUBConfig func(boot.Plan) ([]byte, error)
	// ChainScript is served at /boot.ipxe, GRUBBootstrap at /grub/grub.cfg.
	ChainScript, GRUBBootstrap []byte
	// Firmware and Artifacts are the directories served under
	// /firmware/ (loaders) and /artifacts/ (kernels, initrds).
	Firmware, Artifacts string
	Recorder            boot.Recorder
	Logger              *slog.Logger
}

func (s *Server) log() *slog.Logger {
	if s.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Logger
}

// Handler returns the routes.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /boot.ipxe", func(w http.ResponseWriter, r *http.Request) {
		s.text(w, r, nil, s.ChainScript)
	})
	mux.HandleFunc("GET /ipxe/{mac}", s.ipxe)
	mux.HandleFunc("GET /grub/{file}", s.grub)
	mux.Handle("GET /firmware/", s.files("/firmware/", s.Firmware))
	mux.Handle("GET /artifacts/", s.files("/artifacts/", s.Artifacts))
	return mux
}

// ParseMAC reads a MAC in any of the forms firmware writes: colons,
// hyphens or bare hex, any case.
func ParseMAC(s string) (net.HardwareAddr, error) {
	if len(s) == 12 && !strings.ContainsAny(s, ":-.") {
		var b strings.Builder
		for i := 0; i < 12; i += 2 {
			if i > 0 {
				b.WriteByte(':')
			}
			b.WriteString(s[i : i+2])
		}
		s = b.String()
	}
	m, err := net.ParseMAC(s)
	if err != nil || len(m) != 6 {
		return nil, fmt.Errorf("bad MAC %q", s)
	}
	return m, nil
}

// archOf maps iPXE's ${buildarch} to an architecture.
func archOf(buildarch string) boot.Arch {
	switch buildarch {
	case "i386", "x86_64":
		return boot.ArchX86_64
	case "arm64":
		return boot.ArchAArch64
	}
	return boot.ArchUnknown
}

func (s *Server) ipxe(w http.ResponseWriter, r *http.Request) {
	mac, err := ParseMAC(r.PathValue("mac"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	s.plan(w, r, mac, archOf(r.URL.Query().Get("arch")), s.IPXEScript)
}

func (s *Server) grub(w http.ResponseWriter, r *http.Request) {
	file := r.PathValue("file")
	if file == "grub.cfg" {
		s.text(w, r, nil, s.GRUBBootstrap)
		return
	}
	mac, err := ParseMAC(strings.TrimSuffix(file, ".cfg"))
	if err != nil || !strings.HasSuffix(file, ".cfg") {
		http.Error(w, fmt.Sprintf("want /grub/MAC.cfg, not %q", file), http.StatusBadRequest)
		return
	}
	s.plan(w, r, mac, boot.ArchUnknown, s.GRUBConfig)
}

func (s *Server) plan(w http.ResponseWriter, r *http.Request, mac net.HardwareAddr, arch boot.Arch, gen func(boot.Plan) ([]byte, error)) {
	p, err := s.Planner.Plan(r.Context(), mac, arch)
	if err == nil {
		var b []byte
		if b, err = gen(p); err == nil {
			s.text(w, r, mac, b)
			return
		}
	}
	s.log().Warn("no boot script", "mac", mac.String(), "err", err)
	s.record(r, boot.Event{MAC: mac, File: r.URL.Path, Size: -1, Error: err.Error()})
	http.Error(w, "rackboot: "+err.Error(), http.StatusInternalServerError)
}

func (s *Server) text(w http.ResponseWriter, r *http.Request, mac net.HardwareAddr, b []byte) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	n, err := w.Write(b)
	e := boot.Event{MAC: mac, File: r.URL.Path, Bytes: int64(n), Size: int64(len(b)), Complete: err == nil && n == len(b)}
	if err != nil {
		e.Error = err.Error()
	}
	s.record(r, e)
}

func (s *Server) record(r *http.Request, e boot.Event) {
	if s.Recorder == nil || r.Method == http.MethodHead {
		return
	}
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		e.IP = ap.Addr().Unmap()
	}
	e.Proto, e.Kind, e.Time = "http", "file", time.Now()
	s.Recorder.Record(r.Context(), e)
}

// countingWriter counts the body bytes that reached the connection.
type countingWriter struct {
	http.ResponseWriter
	n      int64
	status int
	err    error
}

func (c *countingWriter) WriteHeader(code int) {
	c.status = code
	c.ResponseWriter.WriteHeader(code)
}

func (c *countingWriter) Write(b []byte) (int, error) {
	if c.status == 0 {
		c.status = http.StatusOK
	}
	n, err := c.ResponseWriter.Write(b)
	c.n += int64(n)
	if err != nil && c.err == nil {
		c.err = err
	}
	return n, err
}

// files serves a directory through os.Root, so neither "..", nor its
// encodings, nor a symlink can reach outside it.
func (s *Server) files(prefix, dir string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := strings.TrimPrefix(r.URL.Path, prefix)
		if dir == "" || name == "" || strings.Contains(name, "\x00") {
			http.NotFound(w, r)
			return
		}
		for _, el := range strings.Split(name, "/") {
			if el == ".." || el == "" {
				http.Error(w, "bad path", http.StatusBadRequest)
				return
			}
		}
		root, err := os.OpenRoot(dir)
		if err != nil {
			http.NotFound(w, r)
			return
		}
		defer root.Close()
		f, err := root.Open(name)
		if err != nil {
			if !errors.Is(err, fs.ErrNotExist) {
				s.log().Info("http refused", "peer", r.RemoteAddr, "file", r.URL.Path, "err", err)
			}
			s.record(r, boot.Event{File: r.URL.Path, Size: -1, Error: "not found"})
			http.NotFound(w, r)
			return
		}
		defer f.Close()
		st, err := f.Stat()
		if err != nil || !st.Mode().IsRegular() {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("ETag", fmt.Sprintf(`"%x-%x"`, st.Size(), st.ModTime().UnixNano()))
		w.Header().Set("Content-Type", "application/octet-stream")
		cw := &countingWriter{ResponseWriter: w}
		http.ServeContent(cw, r, "", st.ModTime(), f)
		if cw.status == http.StatusNotModified || cw.status >= 400 {
			return
		}
		want, _ := strconv.ParseInt(w.Header().Get("Content-Length"), 10, 64)
		e := boot.Event{File: r.URL.Path, Bytes: cw.n, Size: st.Size(), Complete: cw.err == nil && cw.n == want}
		if rg := r.Header.Get("Range"); rg != "" && cw.status == http.StatusPartialContent {
			e.Options = map[string]string{"range": rg}
			e.Complete = e.Complete && cw.n == st.Size()
		}
		if cw.err != nil {
			e.Error = cw.err.Error()
		}
		s.record(r, e)
	})
}
