package api

import (
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// Login throttling: each try is a bcrypt any caller can make the server
// run, and guessing passwords online is the attack it invites. Failures
// are counted per user name and per source address over a window; past
// the limit the login answers 429 until the window ends, without running
// bcrypt at all.
const (
	loginWindow        = 5 * time.Minute
	loginFailsPerUser  = 5
	loginFailsPerPeer  = 20
	loginLimiterMaxKey = 10000
)

type loginLimiter struct {
	mu sync.Mutex
	// fails are the failures in the window of each key ("user:NAME",
	// "peer:ADDR"), with when the window started.
	fails map[string]*failWindow
}

type failWindow struct {
	n     int
	start time.Time
}

func loginKeys(r *http.Request, user string) (userKey, peerKey string) {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	return "user:" + user, "peer:" + host
}

// blocked says for how long a login for user from r must wait; zero when
// it may go ahead.
func (l *loginLimiter) blocked(r *http.Request, user string, now time.Time) time.Duration {
	uk, pk := loginKeys(r, user)
	l.mu.Lock()
	defer l.mu.Unlock()
	var wait time.Duration
	for key, limit := range map[string]int{uk: loginFailsPerUser, pk: loginFailsPerPeer} {
		w := l.fails[key]
		if w == nil || now.Sub(w.start) >= loginWindow {
			continue
		}
		if w.n >= limit {
			wait = max(wait, w.start.Add(loginWindow).Sub(now))
		}
	}
	return wait
}

// failed counts a failed login.
func (l *loginLimiter) failed(r *http.Request, user string, now time.Time) {
	uk, pk := loginKeys(r, user)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.fails == nil {
		l.fails = map[string]*failWindow{}
	}
	if len(l.fails) >= loginLimiterMaxKey {
		// Many names or addresses: forget the windows that are over,
		// and if that is not enough, all but the blocking ones.
		for k, w := range l.fails {
			if now.Sub(w.start) >= loginWindow || w.n < loginFailsPerUser {
				delete(l.fails, k)
			}
		}
	}
	for _, key := range []string{uk, pk} {
		w := l.fails[key]
		if w == nil || now.Sub(w.start) >= loginWindow {
			w = &failWindow{start: now}
			l.fails[key] = w
		}
		w.n++
	}
}

// succeeded forgets a user's failures: the password is known to whoever
// logged in.
func (l *loginLimiter) succeeded(r *http.Request, user string) {
	uk, _ := loginKeys(r, user)
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.fails, uk)
}

func retryAfter(w http.ResponseWriter, d time.Duration) {
	w.Header().Set("Retry-After", strconv.Itoa(int(d.Round(time.Second)/time.Second)+1))
}
