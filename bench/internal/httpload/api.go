package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/rackboot/rackboot/agent/protocol"
	"github.com/rackboot/rackboot/bench/internal/loadstat"
)

type apiConfig struct {
	Base, TokenFile                  string
	Nodes, Agents, Readers, PageSize int
	Duration, Heartbeat              time.Duration
}

// agentAddr is agent i's source address: each simulated node calls from
// an address of its own, as real ones do, so the server's per-source
// connection cap applies to it as to a real node.
func agentAddr(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{127, 1, byte(i / 250), byte(i%250 + 1)})
}

// nodeMAC is node i's MAC: locally administered, unique for 2^24 nodes.
func nodeMAC(i int) string {
	return fmt.Sprintf("02:b0:18:%02x:%02x:%02x", byte(i>>16), byte(i>>8), byte(i))
}

// route is one measured API route's tally, per goroutine.
type route struct {
	lat   loadstat.Latencies
	errs  int
	first error
}

func (r *route) add(t0 time.Time, err error) {
	if err != nil {
		r.errs++
		if r.first == nil {
			r.first = err
		}
		return
	}
	r.lat = append(r.lat, time.Since(t0))
}

func (r *route) merge(o *route) {
	r.lat = append(r.lat, o.lat...)
	r.errs += o.errs
	if r.first == nil {
		r.first = o.first
	}
}

// runAPI enrolls the nodes, boots the agents and measures. The admin
// token is the appliance's own (DATA_DIR/admin.token); the agents get
// theirs only as real ones do, so the server's checks run in full.
func runAPI(ctx context.Context, c apiConfig, log *slog.Logger) (string, error) {
	if c.Nodes <= 0 || c.Agents < 0 || c.Agents > c.Nodes || c.Agents > 250*250 || c.Readers <= 0 || c.Duration <= 0 {
		return "", errors.New("api: want -nodes > 0, 0 <= -agents <= -nodes (and 62,500), -readers > 0, -duration > 0")
	}
	tok, err := os.ReadFile(c.TokenFile)
	if err != nil {
		return "", fmt.Errorf("api: admin token: %w", err)
	}
	admin := strings.TrimSpace(string(tok))
	api := c.Base + "/api/v1"
	client := &http.Client{Transport: transport(64, nil), Timeout: time.Minute}

	// Enroll: POST /nodes is how a site adds nodes ahead of their boot.
	// A node that is there already (a second run on the same data dir)
	// answers 409 and counts as enrolled.
	t0 := time.Now()
	var enrollErr error
	var once sync.Once
	next := make(chan int)
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for i := range next {
				err := loadstat.Call(ctx, client, "POST", api+"/nodes", admin, map[string]string{"mac": nodeMAC(i), "arch": "x86_64"}, nil, http.StatusCreated)
				var se *loadstat.StatusError
				if err != nil && !(errors.As(err, &se) && se.Code == http.StatusConflict) {
					once.Do(func() { enrollErr = err })
				}
			}
		})
	}
	for i := range c.Nodes {
		next <- i
	}
	close(next)
	wg.Wait()
	if enrollErr != nil {
		return "", fmt.Errorf("api: enroll: %w", enrollErr)
	}
	enrollSecs := time.Since(t0).Seconds()
	log.Info("enrolled", "nodes", c.Nodes, "seconds", fmt.Sprintf("%.1f", enrollSecs))

	// Boot the agents: each fetches its node's iPXE script from its own
	// address, takes the boot secret off the kernel command line and
	// trades it for the agent token, as rackboot-agent does.
	t0 = time.Now()
	agents := make([]*agent, c.Agents)
	var bootErr error
	next = make(chan int)
	for range 16 {
		wg.Go(func() {
			for i := range next {
				a, err := bootAgent(ctx, c.Base, i)
				if err != nil {
					once.Do(func() { bootErr = err })
					continue
				}
				agents[i] = a
			}
		})
	}
	for i := range c.Agents {
		next <- i
	}
	close(next)
	wg.Wait()
	once = sync.Once{}
	if bootErr != nil {
		return "", fmt.Errorf("api: boot agents: %w", bootErr)
	}
	bootSecs := time.Since(t0).Seconds()
	log.Info("agents booted", "agents", c.Agents, "seconds", fmt.Sprintf("%.1f", bootSecs))

	mctx, cancel := context.WithTimeout(ctx, c.Duration)
	defer cancel()
	hbs := make([]route, c.Agents)
	lists := make([]route, c.Readers)
	pages := make([]route, c.Readers)
	for i, a := range agents {
		every := c.Heartbeat
		if every <= 0 {
			every = a.every
		}
		wg.Go(func() { a.heartbeat(mctx, api, every, i, &hbs[i]) })
	}
	limit := ""
	if c.PageSize > 0 {
		limit = fmt.Sprintf("limit=%d&", c.PageSize)
	}
	reader := client
	for i := range c.Readers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(i), 1000))
			cursor := ""
			for mctx.Err() == nil {
				var page struct {
					Items      []struct{ ID string } `json:"items"`
					NextCursor string                `json:"next_cursor"`
				}
				t := time.Now()
				err := loadstat.Call(mctx, reader, "GET", api+"/nodes?"+limit+"cursor="+url.QueryEscape(cursor), admin, nil, &page, http.StatusOK)
				if mctx.Err() != nil {
					break
				}
				if err == nil && len(page.Items) == 0 {
					err = fmt.Errorf("node list at cursor %q: no nodes", cursor)
				}
				lists[i].add(t, err)
				// Walk the whole list, page by page, then start again.
				cursor = page.NextCursor
				t = time.Now()
				mac := nodeMAC(rng.IntN(c.Nodes))
				var n struct {
					MACs []string `json:"macs"`
				}
				err = loadstat.Call(mctx, reader, "GET", api+"/nodes/"+url.PathEscape(mac), admin, nil, &n, http.StatusOK)
				if mctx.Err() != nil {
					break
				}
				if err == nil && (len(n.MACs) == 0 || n.MACs[0] != mac) {
					err = fmt.Errorf("node page of %s: macs %v", mac, n.MACs)
				}
				pages[i].add(t, err)
			}
		})
	}
	wg.Wait()
	var hb, list, page route
	for i := range hbs {
		hb.merge(&hbs[i])
	}
	for i := range lists {
		list.merge(&lists[i])
		page.merge(&pages[i])
	}
	secs := c.Duration.Seconds()
	pairs := []any{"httpload", "api", "nodes", c.Nodes, "agents", c.Agents, "readers", c.Readers,
		"enroll_per_s", fmt.Sprintf("%.0f", float64(c.Nodes)/enrollSecs), "boot_per_s", fmt.Sprintf("%.0f", float64(c.Agents)/max(bootSecs, 1e-3))}
	errs := 0
	var first error
	for _, r := range []struct {
		name string
		r    *route
	}{{"list", &list}, {"node", &page}, {"heartbeat", &hb}} {
		pairs = append(pairs, r.name+"_n", len(r.r.lat), r.name+"_per_s", fmt.Sprintf("%.1f", float64(len(r.r.lat))/secs),
			r.name+"_errors", r.r.errs, r.name+"_p50_ms", loadstat.MS(r.r.lat.Quantile(0.5)), r.name+"_p99_ms", loadstat.MS(r.r.lat.Quantile(0.99)))
		errs += r.r.errs
		if first == nil {
			first = r.r.first
		}
	}
	pairs = append(pairs, "failures", errs)
	line := loadstat.KV(pairs...)
	if errs > 0 {
		return line, fmt.Errorf("api: %d requests failed, the first: %w", errs, first)
	}
	return line, nil
}

// agent is one simulated node's agent after its lookup.
type agent struct {
	client *http.Client
	node   string
	token  string
	every  time.Duration
	task   string
}

var bootSecret = regexp.MustCompile(`rackboot\.boot=(\S+)`)

func bootAgent(ctx context.Context, base string, i int) (*agent, error) {
	client := &http.Client{Transport: transport(1, &net.TCPAddr{IP: agentAddr(i).AsSlice()}), Timeout: time.Minute}
	mac := nodeMAC(i)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/ipxe/"+mac, nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("boot script of %s: %w", mac, err)
	}
	script, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("boot script of %s: %s %v", mac, resp.Status, err)
	}
	m := bootSecret.FindSubmatch(script)
	if m == nil {
		return nil, fmt.Errorf("boot script of %s has no rackboot.boot= (is 127.0.0.0/8 in routed_networks?):\n%s", mac, script)
	}
	var res protocol.LookupResult
	if err := loadstat.Call(ctx, client, "POST", base+"/api/v1"+protocol.LookupPath, "",
		protocol.Lookup{MACs: []string{mac}, BootSecret: string(m[1])}, &res, http.StatusOK); err != nil {
		return nil, fmt.Errorf("lookup of %s: %w", mac, err)
	}
	return &agent{client: client, node: res.NodeID, token: res.Token, every: time.Duration(res.Heartbeat)}, nil
}

// heartbeat calls in every interval until ctx ends, starting at a phase
// of its own so the agents spread out as booted nodes do. A task handed
// out is reported running from then on, as the agent would while at it.
func (a *agent) heartbeat(ctx context.Context, api string, every time.Duration, i int, r *route) {
	if every <= 0 {
		every = 10 * time.Second
	}
	phase := time.Duration(rand.New(rand.NewPCG(uint64(i), 7)).Int64N(int64(every)))
	t := time.NewTimer(phase)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		t.Reset(every)
		var res protocol.HeartbeatResult
		t0 := time.Now()
		err := loadstat.Call(ctx, a.client, "POST", api+fmt.Sprintf(protocol.HeartbeatPath, a.node), a.token,
			protocol.Heartbeat{Running: a.task}, &res, http.StatusOK)
		if ctx.Err() != nil {
			return
		}
		r.add(t0, err)
		if res.Task != nil {
			a.task = res.Task.ID
		}
	}
}
