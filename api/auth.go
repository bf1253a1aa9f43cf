package api

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"golang.org/x/crypto/bcrypt"

	"github.com/rackboot/rackboot/agent/protocol"
	secretpkg "github.com/rackboot/rackboot/internal/secret"
	"github.com/rackboot/rackboot/store"
)

// SessionCookie is the web UI's session cookie.
const SessionCookie = "rackboot_session"

// TokenPrefix starts every secret rackboot issues, so a leaked one is
// easy to recognise (and to scan for); an agent makes its token with it
// too.
const TokenPrefix = protocol.TokenPrefix

// rank orders the roles people hold; an agent ranks with nobody.
func rank(r store.Role) int {
	switch r {
	case store.RoleReadonly:
		return 1
	case store.RoleTech:
		return 2
	case store.RoleAdmin:
		return 3
	}
	return 0
}

// ValidRole reports whether r is a role a user or API token may hold.
func ValidRole(r store.Role) bool { return rank(r) > 0 }

// Principal is who makes a request.
type Principal struct {
	Actor string // "user:NAME", "token:ID", "bootstrap"
	Role  store.Role
	User  string
	// session is the secret of a web session: CSRF tokens derive from it.
	session string
	tokenID string
	// NodeID is the node an agent's token is bound to.
	NodeID string
}

type ctxKey struct{}

func principal(r *http.Request) Principal {
	p, _ := r.Context().Value(ctxKey{}).(Principal)
	return p
}

// NewSecret returns a fresh random token secret and the hash stored for it.
func NewSecret() (secret, hash string) { return secretpkg.New(TokenPrefix, 32) }

// HashSecret is how a secret is stored: hex SHA-256.
func HashSecret(s string) string { return secretpkg.Hash(s) }

// csrfToken derives a session's CSRF token: only a page that could read
// the session's own answers knows it.
func csrfToken(session string) string {
	h := sha256.Sum256([]byte("rackboot csrf\x00" + session))
	return hex.EncodeToString(h[:16])
}

// authenticate finds who makes a request: a bearer token, else a session
// cookie. ok is false when credentials were offered and are bad or gone.
func (s *Server) authenticate(r *http.Request) (p Principal, present, ok bool, err error) {
	ctx := r.Context()
	if h := r.Header.Get("Authorization"); h != "" {
		secret, found := strings.CutPrefix(h, "Bearer ")
		if !found || secret == "" {
			return p, true, false, nil
		}
		t, err := s.Store.TokenByHash(ctx, HashSecret(secret))
		if errors.Is(err, store.ErrNotFound) {
			return p, true, false, nil
		}
		if err != nil {
			return p, true, false, err
		}
		if !t.Expires.IsZero() && time.Now().After(t.Expires) {
			return p, true, false, nil
		}
		switch t.Kind {
		case "api":
			role := t.Role
			if t.User != "" {
				// A token never exceeds its user's role as it is now: a
				// demotion or a deleted user takes effect at once.
				u, err := s.Store.User(ctx, t.User)
				if errors.Is(err, store.ErrNotFound) {
					return p, true, false, nil
				}
				if err != nil {
					return p, true, false, err
				}
				if rank(u.Role) < rank(role) {
					role = u.Role
				}
			}
			return Principal{Actor: "token:" + t.ID, Role: role, User: t.User, tokenID: t.ID}, true, true, nil
		case "agent":
			return Principal{Actor: "agent:" + t.NodeID, Role: store.RoleAgent, NodeID: t.NodeID, tokenID: t.ID}, true, true, nil
		case store.TokenHypervisor:
			return Principal{Actor: "hypervisor:" + t.NodeID, Role: store.RoleHypervisor, NodeID: t.NodeID, tokenID: t.ID}, true, true, nil
		}
		return p, true, false, nil
	}
	c, err := r.Cookie(SessionCookie)
	if err != nil || c.Value == "" {
		return p, false, false, nil
	}
	t, err := s.Store.TokenByHash(ctx, HashSecret(c.Value))
	if errors.Is(err, store.ErrNotFound) {
		return p, true, false, nil
	}
	if err != nil {
		return p, true, false, err
	}
	if t.Kind != "session" || (!t.Expires.IsZero() && time.Now().After(t.Expires)) {
		return p, true, false, nil
	}
	// A session carries the user's role as it is now, so a demotion
	// takes effect at once.
	u, err := s.Store.User(ctx, t.User)
	if err != nil {
		return p, true, false, nil
	}
	return Principal{Actor: "user:" + u.Name, Role: u.Role, User: u.Name, session: c.Value, tokenID: t.ID}, true, true, nil
}

func safeMethod(m string) bool {
	return m == http.MethodGet || m == http.MethodHead || m == http.MethodOptions
}

// wrap puts authentication, authorisation, CSRF checking and the audit
// log around a route's handler.
func (s *Server) wrap(rt route) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if rt.role == "" {
			rt.h(w, r)
			return
		}
		p, present, ok, err := s.authenticate(r)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		if !ok {
			unauthorized(w, present, "this needs a token (Authorization: Bearer ...) or a session")
			return
		}
		if rt.role == store.RoleAgent {
			// An agent's token opens its own node's agent routes, and
			// nothing else does.
			if p.Role != store.RoleAgent || p.NodeID != chi.URLParam(r, "id") {
				writeError(w, http.StatusForbidden, "forbidden", "this route takes the agent token of node "+chi.URLParam(r, "id"))
				return
			}
		} else if rt.role == store.RoleHypervisor {
			// A hypervisor's agent token opens its own hypervisor's
			// agent route, and nothing else does.
			if p.Role != store.RoleHypervisor || p.NodeID != chi.URLParam(r, "id") {
				writeError(w, http.StatusForbidden, "forbidden", "this route takes the hypervisor agent token of node "+chi.URLParam(r, "id"))
				return
			}
		} else if rank(p.Role) < rank(rt.role) {
			writeError(w, http.StatusForbidden, "forbidden", string(p.Role)+" may not "+rt.method+" "+rt.pattern+": it needs "+string(rt.role))
			return
		}
		if p.session != "" && !safeMethod(r.Method) {
			// A cross-site form can send the cookie but cannot know the
			// token, nor send a JSON content type without a preflight.
			got := r.Header.Get("X-CSRF-Token")
			if subtle.ConstantTimeCompare([]byte(got), []byte(csrfToken(p.session))) != 1 {
				writeError(w, http.StatusForbidden, "csrf", "missing or wrong X-CSRF-Token header")
				return
			}
		}
		r = r.WithContext(context.WithValue(r.Context(), ctxKey{}, p))
		if safeMethod(r.Method) || rt.audited {
			rt.h(w, r)
			return
		}
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		rt.h(rec, r)
		if rec.status < 300 {
			s.audit(r, p, chi.URLParam(r, "id"), r.Method+" "+r.URL.Path)
		}
	})
}

// unauthorized answers 401: why, when credentials came and were bad;
// what is needed, when none came.
func unauthorized(w http.ResponseWriter, present bool, need string) {
	if present {
		need = "the token or session is not valid (unknown, expired or revoked)"
	}
	writeError(w, http.StatusUnauthorized, "unauthorized", need)
}

// audit records a successful mutating call. It runs after the answer, so
// a failure to record is logged, not returned.
func (s *Server) audit(r *http.Request, p Principal, node, msg string) {
	if node != "" {
		if n, err := s.Store.Node(r.Context(), node); err == nil {
			node = n.ID
		}
	}
	if _, err := s.Store.AddEvent(context.WithoutCancel(r.Context()), store.Event{NodeID: node, Actor: p.Actor, Kind: "audit", Message: msg}); err != nil {
		s.log().Error("audit", "actor", p.Actor, "msg", msg, "err", err)
		return
	}
	s.Broker.Publish()
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.status = code
	r.ResponseWriter.WriteHeader(code)
}

// Login is the body of POST /api/v1/login.
type Login struct {
	Username string `json:"username"`
	Password string `json:"password"`
}

// WhoAmI says who the caller is; CSRFToken is set for web sessions.
type WhoAmI struct {
	User      string `json:"user,omitempty"`
	Role      string `json:"role"`
	Actor     string `json:"actor"`
	CSRFToken string `json:"csrf_token,omitempty"`
}

// dummyHash keeps a login for an unknown user as slow as one for a known
// user, so timing does not tell which names exist.
var dummyHash, _ = bcrypt.GenerateFromPassword([]byte("rackboot"), bcrypt.DefaultCost)

func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	var l Login
	if !decode(w, r, &l) {
		return
	}
	now := time.Now()
	if wait := s.logins.begin(r, l.Username, now); wait > 0 {
		s.log().Warn("login throttled", "user", l.Username, "peer", r.RemoteAddr, "wait", wait.Round(time.Second).String())
		retryAfter(w, wait)
		writeError(w, http.StatusTooManyRequests, "too_many_requests",
			"too many failed logins for this user or from this address: try again in "+wait.Round(time.Second).String())
		return
	}
	u, err := s.Store.User(r.Context(), l.Username)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		s.fail(w, r, err)
		return
	}
	hash := []byte(u.PasswordHash)
	if err != nil {
		hash = dummyHash
	}
	if bcrypt.CompareHashAndPassword(hash, []byte(l.Password)) != nil || err != nil {
		s.log().Warn("login failed", "user", l.Username, "peer", r.RemoteAddr)
		writeError(w, http.StatusUnauthorized, "unauthorized", "wrong user name or password")
		return
	}
	s.logins.succeeded(r, l.Username)
	secret, hashed := NewSecret()
	exp := time.Now().Add(s.sessionTTL()).UTC()
	if _, err := s.Store.CreateToken(r.Context(), store.Token{Hash: hashed, Kind: "session", Role: u.Role, User: u.Name, Expires: exp}); err != nil {
		s.fail(w, r, err)
		return
	}
	http.SetCookie(w, &http.Cookie{Name: SessionCookie, Value: secret, Path: "/", Expires: exp, HttpOnly: true,
		Secure: s.SecureCookies, SameSite: http.SameSiteStrictMode})
	s.audit(r, Principal{Actor: "user:" + u.Name}, "", "login")
	writeJSON(w, http.StatusOK, WhoAmI{User: u.Name, Role: string(u.Role), Actor: "user:" + u.Name, CSRFToken: csrfToken(secret)})
}

func (s *Server) logout(w http.ResponseWriter, r *http.Request) {
	p := principal(r)
	if p.session == "" {
		writeError(w, http.StatusBadRequest, "bad_request", "logout ends a web session; this request has none")
		return
	}
	if err := s.Store.DeleteToken(r.Context(), p.tokenID); err != nil && !errors.Is(err, store.ErrNotFound) {
		s.fail(w, r, err)
		return
	}
	http.SetCookie(w, &http.Cookie{Name: SessionCookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true,
		Secure: s.SecureCookies, SameSite: http.SameSiteStrictMode})
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) whoami(w http.ResponseWriter, r *http.Request) {
	p := principal(r)
	out := WhoAmI{User: p.User, Role: string(p.Role), Actor: p.Actor}
	if p.session != "" {
		out.CSRFToken = csrfToken(p.session)
	}
	writeJSON(w, http.StatusOK, out)
}

// HashPassword is how user passwords are stored.
func HashPassword(pw string) (string, error) {
	h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.DefaultCost)
	return string(h), err
}
