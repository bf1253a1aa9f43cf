package api

import (
	"encoding/json"
	"net/http"
	"strings"
	"time"
	"unicode"

	"github.com/go-chi/chi/v5"

	"github.com/rackboot/rackboot/store"
)

// Image is a catalog image as the API shows it.
type Image struct {
	Name      string    `json:"name"`
	Arch      string    `json:"arch"`
	Format    string    `json:"format"`
	Size      int64     `json:"size"`
	SHA256    string    `json:"sha256"`
	RawSize   int64     `json:"raw_size"`
	RawSHA256 string    `json:"raw_sha256"`
	Source    string    `json:"source"`
	Created   time.Time `json:"created"`
}

// ImageList lists images.
type ImageList struct {
	Items []Image `json:"items"`
}

func imageFrom(im store.Image) Image {
	return Image{Name: im.Name, Arch: string(im.Arch), Format: im.Format, Size: im.Size, SHA256: im.SHA256, RawSize: im.RawSize, RawSHA256: im.RawSHA256,
		Source: im.Source, Created: im.Created}
}

func (s *Server) listImages(w http.ResponseWriter, r *http.Request) {
	ims, err := s.Store.Images(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := ImageList{Items: []Image{}}
	for _, im := range ims {
		out.Items = append(out.Items, imageFrom(im))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) getImage(w http.ResponseWriter, r *http.Request) {
	im, err := s.Store.Image(r.Context(), chi.URLParam(r, "name"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, imageFrom(im))
}

// Task is agent work as the API shows it.
type Task struct {
	ID      string    `json:"id"`
	NodeID  string    `json:"node_id"`
	Kind    string    `json:"kind"`
	State   string    `json:"state"`
	Params  any       `json:"params"`
	Result  any       `json:"result"`
	Error   string    `json:"error"`
	Created time.Time `json:"created"`
	Updated time.Time `json:"updated"`
}

// TaskList lists tasks, oldest first.
type TaskList struct {
	Items []Task `json:"items"`
}

// Withheld stands for a task secret in what non-admins see.
const Withheld = "(set: shown to admins only)"

// taskFrom is a task as the API shows it; for anyone but an admin, the
// secrets in its parameters (cloud-init user data, SSH keys, passwords,
// tokens) read Withheld: that they are set, not what they are.
func taskFrom(t store.Task, admin bool) Task {
	out := Task{ID: t.ID, NodeID: t.NodeID, Kind: t.Kind, State: string(t.State), Error: t.Error, Created: t.Created, Updated: t.Updated}
	if len(t.Params) > 0 {
		out.Params = t.Params
		if !admin {
			var p any
			if json.Unmarshal(t.Params, &p) == nil {
				out.Params = withhold(p, false)
			} else {
				out.Params = Withheld
			}
		}
	}
	if len(t.Result) > 0 {
		out.Result = t.Result
	}
	return out
}

// withhold replaces the secret values in a task's parameters: all of
// cloud_init's user_data and ssh_keys, and anything anywhere whose name
// says password, secret or token.
func withhold(v any, inCloudInit bool) any {
	switch x := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, val := range x {
			lk := strings.ToLower(k)
			switch {
			case inCloudInit && (lk == "user_data" || lk == "ssh_keys"),
				strings.Contains(lk, "password"), strings.Contains(lk, "secret"), strings.Contains(lk, "token"):
				out[k] = Withheld
			default:
				out[k] = withhold(val, inCloudInit || lk == "cloud_init")
			}
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, val := range x {
			out[i] = withhold(val, inCloudInit)
		}
		return out
	}
	return v
}

func (s *Server) listTasks(w http.ResponseWriter, r *http.Request) {
	f := store.TaskFilter{State: store.TaskState(r.URL.Query().Get("state"))}
	if ref := r.URL.Query().Get("node"); ref != "" {
		n, err := s.Store.Node(r.Context(), ref)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		f.NodeID = n.ID
	}
	var ok bool
	if f.Limit, ok = limit(w, r, 1000); !ok {
		return
	}
	ts, err := s.Store.Tasks(r.Context(), f)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := TaskList{Items: []Task{}}
	for _, t := range ts {
		out.Items = append(out.Items, taskFrom(t, principal(r).Role == store.RoleAdmin))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) getTask(w http.ResponseWriter, r *http.Request) {
	t, err := s.Store.Task(r.Context(), chi.URLParam(r, "tid"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, taskFrom(t, principal(r).Role == store.RoleAdmin))
}

// Token is an API token as the API shows it: never its secret.
type Token struct {
	ID      string     `json:"id"`
	Name    string     `json:"name"`
	Role    string     `json:"role"`
	User    string     `json:"user"`
	Created time.Time  `json:"created"`
	Expires *time.Time `json:"expires"`
}

// TokenList lists API tokens.
type TokenList struct {
	Items []Token `json:"items"`
}

// NewToken is the body of POST /api/v1/tokens. TTL is a duration such as
// "720h"; empty means the token does not expire.
type NewToken struct {
	Name string `json:"name"`
	Role string `json:"role"`
	TTL  string `json:"ttl,omitempty"`
}

// CreatedToken is the answer to POST /api/v1/tokens: the only time the
// secret is shown.
type CreatedToken struct {
	Token  Token  `json:"token"`
	Secret string `json:"secret"`
}

func tokenFrom(t store.Token) Token {
	out := Token{ID: t.ID, Name: t.Name, Role: string(t.Role), User: t.User, Created: t.Created}
	if !t.Expires.IsZero() {
		e := t.Expires
		out.Expires = &e
	}
	return out
}

func (s *Server) listTokens(w http.ResponseWriter, r *http.Request) {
	ts, err := s.Store.Tokens(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := TokenList{Items: []Token{}}
	for _, t := range ts {
		// Nodes' boot secrets are nobody's to list or revoke: a boot
		// replaces them.
		if t.Kind == store.TokenBoot || t.Kind == store.TokenBootUsed {
			continue
		}
		out.Items = append(out.Items, tokenFrom(t))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) createToken(w http.ResponseWriter, r *http.Request) {
	var nt NewToken
	if !decode(w, r, &nt) {
		return
	}
	if !ValidRole(store.Role(nt.Role)) {
		writeError(w, http.StatusBadRequest, "bad_request", "role must be admin, tech or readonly")
		return
	}
	if strings.TrimSpace(nt.Name) == "" {
		writeError(w, http.StatusBadRequest, "bad_request", "a token needs a name saying what it is for")
		return
	}
	t := store.Token{Kind: "api", Name: nt.Name, Role: store.Role(nt.Role), User: principal(r).User}
	if nt.TTL != "" {
		d, err := time.ParseDuration(nt.TTL)
		if err != nil || d <= 0 {
			writeError(w, http.StatusBadRequest, "bad_request", "ttl must be a positive duration such as 720h")
			return
		}
		t.Expires = time.Now().Add(d).UTC()
	}
	secret, hash := NewSecret()
	t.Hash = hash
	t, err := s.Store.CreateToken(r.Context(), t)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, CreatedToken{Token: tokenFrom(t), Secret: secret})
}

func (s *Server) deleteToken(w http.ResponseWriter, r *http.Request) {
	if err := s.Store.DeleteToken(r.Context(), chi.URLParam(r, "tid")); err != nil {
		s.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// User is a web UI user as the API shows it.
type User struct {
	Name    string    `json:"name"`
	Role    string    `json:"role"`
	Created time.Time `json:"created"`
}

// UserList lists users.
type UserList struct {
	Items []User `json:"items"`
}

// NewUser is the body of POST /api/v1/users; an existing user's password
// and role are replaced.
type NewUser struct {
	Name     string `json:"name"`
	Password string `json:"password"`
	Role     string `json:"role"`
}

func (s *Server) listUsers(w http.ResponseWriter, r *http.Request) {
	us, err := s.Store.Users(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := UserList{Items: []User{}}
	for _, u := range us {
		out.Items = append(out.Items, User{Name: u.Name, Role: string(u.Role), Created: u.Created})
	}
	writeJSON(w, http.StatusOK, out)
}

// MinPasswordLength is the shortest password a user may be given.
const MinPasswordLength = 12

func validUserName(n string) bool {
	if n == "" || len(n) > 64 {
		return false
	}
	for _, r := range n {
		if !(unicode.IsLetter(r) || unicode.IsDigit(r) || strings.ContainsRune("._-@", r)) {
			return false
		}
	}
	return true
}

func (s *Server) putUser(w http.ResponseWriter, r *http.Request) {
	var nu NewUser
	if !decode(w, r, &nu) {
		return
	}
	switch {
	case !validUserName(nu.Name):
		writeError(w, http.StatusBadRequest, "bad_request", "a user name is 1 to 64 letters, digits and . _ - @")
		return
	case !ValidRole(store.Role(nu.Role)):
		writeError(w, http.StatusBadRequest, "bad_request", "role must be admin, tech or readonly")
		return
	case len(nu.Password) < MinPasswordLength:
		writeError(w, http.StatusBadRequest, "bad_request", "a password needs at least 12 characters")
		return
	}
	hash, err := HashPassword(nu.Password)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	// A new password ends the user's sessions, in the same transaction.
	u := store.User{Name: nu.Name, Role: store.Role(nu.Role), PasswordHash: hash}
	if err := s.Store.ReplaceUser(r.Context(), u); err != nil {
		s.fail(w, r, err)
		return
	}
	u, err = s.Store.User(r.Context(), nu.Name)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, User{Name: u.Name, Role: string(u.Role), Created: u.Created})
}

func (s *Server) deleteUser(w http.ResponseWriter, r *http.Request) {
	name := chi.URLParam(r, "name")
	if name == principal(r).User {
		writeError(w, http.StatusConflict, "conflict", "you cannot delete the user you are logged in as")
		return
	}
	if err := s.Store.DeleteUser(r.Context(), name); err != nil {
		s.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// Version says which rackboot answers.
type Version struct {
	Version string `json:"version"`
}

func (s *Server) version(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, Version{Version: s.Version})
}
