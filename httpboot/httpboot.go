// Package httpboot is rackboot's boot-time HTTP server: the iPXE chain
// script and per-node scripts, GRUB configs, the loaders for UEFI HTTP
// boot, and kernels and initrds with Range and ETag. It is unauthenticated,
// as firmware needs, and serves nothing secret. What a node boots comes
// from a Planner, the script text from generator functions the caller
// passes in, so this package knows neither the store nor the script
// syntax.
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
	"syscall"
	"time"

	"github.com/rackboot/rackboot/boot"
	"github.com/rackboot/rackboot/internal/httpserve"
)

// Planner says what a node boots now. An unknown MAC is the planner's
// business: it may enroll it. arch is ArchUnknown when the client did not
// say.
type Planner interface {
	// from is the requester's address: a node's boot secret goes only
	// into a plan asked for from the node's own address.
	Plan(ctx context.Context, mac net.HardwareAddr, arch boot.Arch, from netip.Addr) (boot.Plan, error)
}

// Server serves boot-time HTTP. The zero value serves nothing but 404s;
// each field turns on the routes that need it.
type Server struct {
	// Planner decides what /ipxe/{mac} and /grub/{mac}.cfg boot. Without
	// it those routes answer 404.
	Planner Planner
	// IPXEScript writes a plan as the iPXE script at /ipxe/{mac}
	// (ipxe.Script); nil turns the route off.
	IPXEScript func(boot.Plan) ([]byte, error)
	// GRUBConfig writes a plan as the GRUB config at /grub/{mac}.cfg
	// (grub.Config); nil turns the route off.
	GRUBConfig func(boot.Plan) ([]byte, error)
	// ChainScript is served at /boot.ipxe (ipxe.Chain), GRUBBootstrap at
	// /grub/grub.cfg (grub.Bootstrap); nil answers 404.
	ChainScript, GRUBBootstrap []byte
	// Firmware is the directory served under /firmware/ (loaders, for UEFI
	// HTTP boot); Artifacts the one under /artifacts/ (kernels, initrds,
	// images). Empty turns the route off. Nothing outside either is ever
	// served: not through "..", nor through a symlink.
	Firmware, Artifacts string
	// Trees are more directories, each under a prefix of its own, whose
	// files another system rewrites in place (Ironic's http_root): they
	// are never cached, and refused as Firmware's are.
	Trees []Tree
	// Recorder gets an event for every script, config or file served or
	// refused (HEAD requests and 304s, which send no body, are not
	// recorded). Nil records nothing.
	Recorder boot.Recorder
	// Logger gets refused requests and failed plans; nil discards.
	Logger *slog.Logger
}

func (s *Server) log() *slog.Logger {
	if s.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Logger
}

// Serve answers HTTP on ln until ctx ends, then lets requests in flight
// finish for up to 5 seconds (httpserve.ShutdownGrace) and returns nil.
// It closes ln. The appliance serves the same Handler, beside the API,
// through the same httpserve.Serve.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	return httpserve.Serve(ctx, ln, s.Handler(), s.log())
}

// Tree is a directory served under Prefix: a path without a slash at
// either end ("ironic/c1"), none of the server's own routes.
type Tree struct{ Prefix, Dir string }

// Handler returns the routes. GET routes answer HEAD as well.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /boot.ipxe", func(w http.ResponseWriter, r *http.Request) {
		s.text(w, r, nil, s.ChainScript)
	})
	mux.HandleFunc("GET /ipxe/{mac}", s.ipxe)
	mux.HandleFunc("GET /grub/grub.cfg", func(w http.ResponseWriter, r *http.Request) {
		s.text(w, r, nil, s.GRUBBootstrap)
	})
	mux.HandleFunc("GET /grub/{file}", s.grub)
	mux.HandleFunc("GET /firmware/{path...}", func(w http.ResponseWriter, r *http.Request) {
		s.file(w, r, s.Firmware)
	})
	mux.HandleFunc("GET /artifacts/{path...}", func(w http.ResponseWriter, r *http.Request) {
		s.file(w, r, s.Artifacts)
	})
	for _, t := range s.Trees {
		mux.HandleFunc("GET /"+t.Prefix+"/{path...}", func(w http.ResponseWriter, r *http.Request) {
			s.serveFile(w, r, t.Dir, false)
		})
	}
	return mux
}

// ParseMAC reads a 6-byte MAC in any of the forms firmware and boot
// loaders write: colons (GRUB), hyphens (iPXE's hexhyp), dots, or bare
// hex (iPXE's hexraw), in any case.
func ParseMAC(s string) (net.HardwareAddr, error) {
	in := s
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
	if err != nil {
		return nil, fmt.Errorf("parse mac %q: %w", in, err)
	}
	if len(m) != 6 {
		return nil, fmt.Errorf("parse mac %q: %d bytes, want 6", in, len(m))
	}
	return m, nil
}

// ParseArch maps the architecture a boot loader names (iPXE's
// ${buildarch}: i386, x86_64, arm64; GRUB's ${grub_cpu}: i386, x86_64,
// arm64) to the CPU the kernel must be built for. An x86 iPXE reports
// i386 when it is the BIOS build, on a 64-bit CPU all the same. Empty is
// ArchUnknown, not an error: the planner decides.
func ParseArch(s string) (boot.Arch, error) {
	switch s {
	case "":
		return boot.ArchUnknown, nil
	case "i386", "x86_64", "x86-64", "amd64":
		return boot.ArchX86_64, nil
	case "arm64", "aarch64":
		return boot.ArchAArch64, nil
	}
	return boot.ArchUnknown, fmt.Errorf("parse arch %q: not one rackboot boots", s)
}

func (s *Server) ipxe(w http.ResponseWriter, r *http.Request) {
	s.plan(w, r, r.PathValue("mac"), s.IPXEScript)
}

func (s *Server) grub(w http.ResponseWriter, r *http.Request) {
	name, ok := strings.CutSuffix(r.PathValue("file"), ".cfg")
	if !ok {
		s.refuse(w, r, nil, http.StatusNotFound, fmt.Sprintf("no GRUB file %q: want /grub/MAC.cfg", r.PathValue("file")))
		return
	}
	s.plan(w, r, name, s.GRUBConfig)
}

// plan serves the script or config gen writes for the node with MAC mac.
func (s *Server) plan(w http.ResponseWriter, r *http.Request, rawMAC string, gen func(boot.Plan) ([]byte, error)) {
	if s.Planner == nil || gen == nil {
		s.refuse(w, r, nil, http.StatusNotFound, "not configured")
		return
	}
	mac, err := ParseMAC(rawMAC)
	if err != nil {
		s.refuse(w, r, nil, http.StatusBadRequest, err.Error())
		return
	}
	arch, err := ParseArch(r.URL.Query().Get("arch"))
	if err != nil {
		s.refuse(w, r, mac, http.StatusBadRequest, err.Error())
		return
	}
	from := netip.Addr{}
	if ap, perr := netip.ParseAddrPort(r.RemoteAddr); perr == nil {
		from = ap.Addr().Unmap()
	}
	p, err := s.Planner.Plan(r.Context(), mac, arch, from)
	if errors.Is(err, boot.ErrUnknownNode) || errors.Is(err, boot.ErrOtherOwner) {
		s.refuse(w, r, mac, http.StatusNotFound, err.Error())
		return
	}
	if err != nil {
		err = fmt.Errorf("plan %s: %w", mac, err)
	} else if b, gerr := gen(p); gerr != nil {
		err = fmt.Errorf("write boot script for %s: %w", mac, gerr)
	} else {
		s.text(w, r, mac, b)
		return
	}
	s.log().Warn("no boot script", "mac", mac.String(), "peer", r.RemoteAddr, "err", err)
	s.refuse(w, r, mac, http.StatusInternalServerError, err.Error())
}

// refuse answers an error in plain text and records it.
func (s *Server) refuse(w http.ResponseWriter, r *http.Request, mac net.HardwareAddr, code int, msg string) {
	http.Error(w, "rackboot: "+msg, code)
	s.record(r, boot.Event{MAC: mac, File: r.URL.Path, Size: -1, Error: fmt.Sprintf("%d %s", code, msg)})
}

// text serves a generated script. Scripts change with the node's state,
// so they are never cached.
func (s *Server) text(w http.ResponseWriter, r *http.Request, mac net.HardwareAddr, b []byte) {
	if b == nil {
		s.refuse(w, r, mac, http.StatusNotFound, "not configured")
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	if r.Method == http.MethodHead {
		return
	}
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
	// The request's context ends when the client goes; the event of a
	// download it broke off still has to be kept.
	s.Recorder.Record(context.WithoutCancel(r.Context()), e)
}

// file serves a file under dir through os.Root, so that neither "..", nor
// its encodings, nor a symlink can reach outside it.
func (s *Server) file(w http.ResponseWriter, r *http.Request, dir string) {
	s.serveFile(w, r, dir, true)
}

// serveFile is file, with validators and caching allowed or not: a file
// edited in place can keep its size and, within the clock's resolution,
// its time, so a validator would let a client keep stale bytes.
func (s *Server) serveFile(w http.ResponseWriter, r *http.Request, dir string, cache bool) {
	if dir == "" {
		s.refuse(w, r, nil, http.StatusNotFound, "not configured")
		return
	}
	name := r.PathValue("path")
	if !fs.ValidPath(name) || name == "." || strings.ContainsRune(name, '\\') {
		s.log().Info("http path refused", "peer", r.RemoteAddr, "file", r.URL.Path)
		s.refuse(w, r, nil, http.StatusNotFound, "not found")
		return
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		s.log().Error("http root", "dir", dir, "err", err)
		s.refuse(w, r, nil, http.StatusNotFound, "not found")
		return
	}
	defer root.Close()
	// O_NONBLOCK keeps a FIFO planted in a tree (another system writes
	// Ironic's) from hanging the request; it is refused below as not
	// regular.
	f, err := root.OpenFile(name, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			// Most often a symlink that leads out of the root.
			s.log().Info("http open refused", "peer", r.RemoteAddr, "file", r.URL.Path, "err", err)
		}
		s.refuse(w, r, nil, http.StatusNotFound, "not found")
		return
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() {
		s.refuse(w, r, nil, http.StatusNotFound, "not found")
		return
	}
	var sent httpserve.Sent
	if cache {
		sent = httpserve.File(w, r, f, st.ModTime(), etag(st))
	} else {
		w.Header().Set("Cache-Control", "no-store")
		// With no validator of ours, a client's own (If-None-Match: *)
		// must not turn into a 304 either; a range asked for only if the
		// file is unchanged (If-Range) cannot be promised, so the whole
		// file goes.
		if r.Header.Get("If-Range") != "" {
			r.Header.Del("Range")
		}
		for _, h := range []string{"If-None-Match", "If-Modified-Since", "If-Match", "If-Unmodified-Since", "If-Range"} {
			r.Header.Del(h)
		}
		sent = httpserve.File(w, r, f, time.Time{}, "")
	}
	switch {
	case sent.Status == http.StatusNotModified || r.Method == http.MethodHead:
		return
	case sent.Status >= 400:
		s.record(r, boot.Event{File: r.URL.Path, Size: st.Size(), Error: fmt.Sprintf("%d %s", sent.Status, http.StatusText(sent.Status))})
		return
	}
	e := boot.Event{
		File:     r.URL.Path,
		Bytes:    sent.Bytes,
		Size:     st.Size(),
		Complete: sent.Complete(),
	}
	if sent.Status == http.StatusPartialContent {
		e.Options = map[string]string{"range": r.Header.Get("Range")}
	}
	if sent.Err != nil {
		e.Error = sent.Err.Error()
	} else if !e.Complete {
		e.Error = fmt.Sprintf("sent %d of %d bytes", sent.Bytes, sent.Want)
	}
	s.record(r, e)
}

// etag is a strong validator: the same inode, size and modification time
// mean the same bytes for files that are replaced, not edited in place,
// which is how artifacts and loaders are installed.
func etag(st fs.FileInfo) string {
	return fmt.Sprintf(`"%x-%x-%x"`, inode(st), st.Size(), st.ModTime().UnixNano())
}
