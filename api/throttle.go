package api

import (
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// Login throttling: each try is a bcrypt any caller can make the server
// run, and guessing passwords online is the attack it invites. Tries are
// counted per user name from one address, per user name from anywhere and
// per address over a window; past a limit the login answers 429 until the
// window ends, without running bcrypt. A try is counted before bcrypt
// runs, so tries sent all at once are limited too, and a successful login
// takes its own try back. The limit for one name from anywhere is the
// highest, so nobody locks a user out from a few addresses.
const (
	loginWindow        = 5 * time.Minute
	loginFailsPerPair  = 5  // one user name from one address
	loginFailsPerUser  = 50 // one user name from anywhere
	loginFailsPerPeer  = 20 // one address, any names
	loginLimiterMaxKey = 10000
)

type loginLimiter struct {
	// perPair, perUser and perPeer replace the limits when set (tests).
	perPair, perUser, perPeer int

	mu sync.Mutex
	// fails are the tries in the window of each key.
	fails map[string]*failWindow
}

type failWindow struct {
	n     int
	start time.Time
}

// loginKeys are the counters a login for user from r counts against,
// with their limits.
func (l *loginLimiter) keys(r *http.Request, user string) map[string]int {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	or := func(v, d int) int {
		if v > 0 {
			return v
		}
		return d
	}
	return map[string]int{"pair:" + user + "\x00" + host: or(l.perPair, loginFailsPerPair),
		"user:" + user: or(l.perUser, loginFailsPerUser), "peer:" + host: or(l.perPeer, loginFailsPerPeer)}
}

// begin counts a try of user from r and says for how long it must wait
// instead; zero when it may go ahead.
func (l *loginLimiter) begin(r *http.Request, user string, now time.Time) time.Duration {
	keys := l.keys(r, user)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.fails == nil {
		l.fails = map[string]*failWindow{}
	}
	var wait time.Duration
	for key, limit := range keys {
		if w := l.fails[key]; w != nil && now.Sub(w.start) < loginWindow && w.n >= limit {
			wait = max(wait, w.start.Add(loginWindow).Sub(now))
		}
	}
	if wait > 0 {
		return wait
	}
	if len(l.fails) >= loginLimiterMaxKey {
		// Many names or addresses: forget the windows that are over, and
		// if that is not enough, the ones far from their limit.
		for k, w := range l.fails {
			if now.Sub(w.start) >= loginWindow || w.n < loginFailsPerPair {
				delete(l.fails, k)
			}
		}
	}
	for key := range keys {
		w := l.fails[key]
		if w == nil || now.Sub(w.start) >= loginWindow {
			w = &failWindow{start: now}
			l.fails[key] = w
		}
		w.n++
	}
	return 0
}

// succeeded takes a successful login's try back and forgets the user's
// failures from that address: whoever logged in knows the password.
func (l *loginLimiter) succeeded(r *http.Request, user string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for key := range l.keys(r, user) {
		if w := l.fails[key]; w != nil {
			if w.n--; w.n <= 0 || key[:5] == "pair:" {
				delete(l.fails, key)
			}
		}
	}
}

func retryAfter(w http.ResponseWriter, d time.Duration) {
	w.Header().Set("Retry-After", strconv.Itoa(int(d.Round(time.Second)/time.Second)+1))
}
