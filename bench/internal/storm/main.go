// Command storm is the client of bench/storm.sh: N simulated nodes power
// on within a second of each other, as a rack does after a power cut,
// and each boots the way a UEFI x86-64 server with iPXE does. Its PXE
// firmware runs DHCP through a relay address and fetches the loader the
// ACK names over TFTP from its own leased address; the loader runs DHCP
// again as iPXE, follows the boot scripts over HTTP and fetches the
// kernel and initrds they name; when the kernel command line carries a
// rackboot boot secret, the node's agent looks itself up and heartbeats.
// Retries and timeouts are the firmware's. It prints one result line of
// key=value pairs: nodes done and failed, the time to the last node, and
// p50/p99 of each step; it exits non-zero when a node failed.
package main

import (
	"context"
	"crypto/rand"
	"flag"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"sync"
	"time"

	"github.com/rackboot/rackboot/agent/protocol"
	"github.com/rackboot/rackboot/bench/internal/loadstat"
)

type config struct {
	nodes      int
	spread     time.Duration
	giaddr     netip.Addr
	server     netip.Addr
	blksize    int
	heartbeats int
	every      time.Duration
	macPrefix  byte
	timeout    time.Duration
}

// steps a node's boot goes through, in order; each is timed.
var steps = []string{"dhcp", "tftp", "ipxe_dhcp", "script", "kernel", "initrd", "lookup", "heartbeat"}

// tally is one node's figures, merged at the end.
type tally struct {
	lat     map[string]time.Duration
	beats   loadstat.Latencies
	again   int // DHCP and TFTP packets sent again
	bytes   int64
	files   time.Time // when its last boot file had come
	done    time.Time
	err     error
	failed  string // the step that failed
	secrets bool   // the kernel command line had a boot secret
}

func main() {
	var c config
	flag.IntVar(&c.nodes, "nodes", 100, "simulated nodes")
	flag.DurationVar(&c.spread, "spread", time.Second, "the nodes power on at random moments within this")
	giaddr := flag.String("giaddr", "10.67.0.1", "the relay address: a local address the DHCP server's answers are routed to, in the nodes' subnet")
	server := flag.String("server", "10.66.0.1", "the DHCP server's address")
	flag.IntVar(&c.blksize, "blksize", 1468, "the TFTP block size the firmware asks for")
	flag.IntVar(&c.heartbeats, "heartbeats", 3, "heartbeats each agent sends after its lookup")
	flag.DurationVar(&c.every, "heartbeat", time.Second, "time between an agent's heartbeats")
	mp := flag.Uint("mac-prefix", 0x10, "the fourth byte of every simulated MAC (02:b0:57:PP:xx:xx): runs with other prefixes are other nodes")
	flag.DurationVar(&c.timeout, "timeout", 5*time.Minute, "give up on the storm after this")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	var err error
	if c.giaddr, err = netip.ParseAddr(*giaddr); err == nil {
		c.server, err = netip.ParseAddr(*server)
	}
	if err != nil || c.nodes <= 0 || c.nodes > 65000 || *mp > 255 {
		log.Error("storm: want -giaddr and -server IPv4 addresses, 0 < -nodes <= 65000, -mac-prefix < 256", "err", err)
		os.Exit(2)
	}
	c.macPrefix = byte(*mp)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	line, err := run(ctx, c)
	if line != "" {
		fmt.Println(line)
	}
	if err != nil {
		log.Error("storm", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, c config) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	r, err := newRelay(c.giaddr, c.server)
	if err != nil {
		return "", err
	}
	defer r.Close()
	tallies := make([]tally, c.nodes)
	var wg sync.WaitGroup
	start := time.Now()
	rng := mrand.New(mrand.NewPCG(uint64(c.nodes), 57))
	for i := range c.nodes {
		at := time.Duration(rng.Int64N(int64(c.spread) + 1))
		wg.Go(func() {
			select {
			case <-ctx.Done():
				tallies[i].err = ctx.Err()
				return
			case <-time.After(at):
			}
			tallies[i] = bootNode(ctx, c, r, i)
		})
	}
	wg.Wait()
	return report(c, tallies, start)
}

func nodeMAC(prefix byte, i int) net.HardwareAddr {
	return net.HardwareAddr{0x02, 0xb0, 0x57, prefix, byte(i >> 8), byte(i)}
}

// bootNode is one node's boot, from power-on to its last heartbeat.
func bootNode(ctx context.Context, c config, r *relay, i int) (t tally) {
	t.lat = map[string]time.Duration{}
	mac := nodeMAC(c.macPrefix, i)
	var uuid [16]byte
	rand.Read(uuid[:])
	step := func(name string, f func() error) bool {
		t0 := time.Now()
		if err := f(); err != nil {
			t.err, t.failed = fmt.Errorf("node %s: %s: %w", mac, name, err), name
			return false
		}
		t.lat[name] = time.Since(t0)
		return true
	}
	var l lease
	if !step("dhcp", func() (err error) {
		var again int
		l, again, err = r.dora(ctx, mac, uuid, false)
		t.again += again
		return err
	}) {
		return t
	}
	if !step("tftp", func() error {
		n, again, err := tftpGet(l.ip, netip.AddrPortFrom(l.next, 69), l.file, c.blksize)
		t.again += again
		t.bytes += n
		return err
	}) {
		return t
	}
	if !step("ipxe_dhcp", func() (err error) {
		var again int
		l, again, err = r.dora(ctx, mac, uuid, true)
		t.again += again
		return err
	}) {
		return t
	}
	// iPXE keeps one connection, from the node's own address.
	d := &net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: l.ip.AsSlice()}}
	client := &http.Client{Timeout: 2 * time.Minute, Transport: &http.Transport{DialContext: d.DialContext, MaxIdleConnsPerHost: 1, DisableCompression: true}}
	defer client.CloseIdleConnections()
	var s script
	if !step("script", func() error {
		u := l.file
		for depth := 0; ; depth++ {
			if depth == 4 {
				return fmt.Errorf("chained 4 scripts deep at %s", u)
			}
			b, _, err := fetch(ctx, client, u)
			if err != nil {
				return err
			}
			if s, err = parseScript(b, mac.String()); err != nil {
				return fmt.Errorf("%s: %w", u, err)
			}
			if s.chain == "" {
				break
			}
			next, err := url.Parse(u)
			if err == nil {
				next, err = next.Parse(s.chain)
			}
			if err != nil {
				return fmt.Errorf("%s: chain %q: %w", u, s.chain, err)
			}
			u = next.String()
		}
		if s.exit {
			return fmt.Errorf("the node is told to boot from its disk")
		}
		return nil
	}) {
		return t
	}
	if !step("kernel", func() error {
		_, n, err := fetch(ctx, client, s.kernel)
		t.bytes += n
		return err
	}) {
		return t
	}
	if !step("initrd", func() error {
		for _, u := range s.initrds {
			_, n, err := fetch(ctx, client, u)
			t.bytes += n
			if err != nil {
				return err
			}
		}
		return nil
	}) {
		return t
	}
	t.files = time.Now()
	secret, api := cmdlineValue(s.cmdline, "rackboot.boot"), cmdlineValue(s.cmdline, "rackboot.api")
	if secret == "" || api == "" {
		// A kernel that boots no rackboot agent: the boot is done.
		t.done = t.files
		return t
	}
	t.secrets = true
	api = strings.TrimRight(api, "/") + "/api/v1"
	var res protocol.LookupResult
	if !step("lookup", func() error {
		return loadstat.Call(ctx, client, "POST", api+protocol.LookupPath, "", protocol.Lookup{MACs: []string{mac.String()}, BootSecret: secret}, &res, http.StatusOK)
	}) {
		return t
	}
	// Booted: the agent is up. Its heartbeats show the server keeps up
	// with the agents while the rest of the storm boots.
	t.done = time.Now()
	if !step("heartbeat", func() error {
		for k := range c.heartbeats {
			if k > 0 {
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-time.After(c.every):
				}
			}
			t0 := time.Now()
			var hb protocol.HeartbeatResult
			if err := loadstat.Call(ctx, client, "POST", api+fmt.Sprintf(protocol.HeartbeatPath, res.NodeID), res.Token, protocol.Heartbeat{}, &hb, http.StatusOK); err != nil {
				return fmt.Errorf("heartbeat %d: %w", k+1, err)
			}
			t.beats = append(t.beats, time.Since(t0))
		}
		return nil
	}) {
		return t
	}
	delete(t.lat, "heartbeat")
	return t
}

func report(c config, tallies []tally, start time.Time) (string, error) {
	per := map[string]loadstat.Latencies{}
	var beats, total loadstat.Latencies
	var last, files time.Time
	var bytes int64
	done, failed, again, agents := 0, 0, 0, 0
	fails := map[string]int{}
	var first error
	for _, t := range tallies {
		again += t.again
		bytes += t.bytes
		if t.err != nil {
			failed++
			fails[t.failed]++
			if first == nil {
				first = t.err
			}
			continue
		}
		done++
		if t.secrets {
			agents++
		}
		for k, d := range t.lat {
			per[k] = append(per[k], d)
		}
		beats = append(beats, t.beats...)
		if t.done.After(last) {
			last = t.done
		}
		if t.files.After(files) {
			files = t.files
		}
		var sum time.Duration
		for _, d := range t.lat {
			sum += d
		}
		total = append(total, sum)
	}
	secs := func(t time.Time) string {
		if t.IsZero() {
			return "0"
		}
		return fmt.Sprintf("%.2f", t.Sub(start).Seconds())
	}
	// last_node_s is when the last node was up (its agent looked up, for
	// rackboot), last_files_s when the last node had its boot files: the
	// figure to hold beside a server that runs no agent.
	pairs := []any{"storm", "ipxe", "nodes", c.nodes, "done", done, "failures", failed, "agents", agents,
		"last_node_s", secs(last), "last_files_s", secs(files), "resent", again, "mbytes", bytes >> 20,
		"boot_p50_ms", loadstat.MS(total.Quantile(0.5)), "boot_p99_ms", loadstat.MS(total.Quantile(0.99))}
	for _, s := range steps {
		l := per[s]
		if s == "heartbeat" {
			l = beats
		}
		if len(l) == 0 {
			continue
		}
		pairs = append(pairs, s+"_p50_ms", loadstat.MS(l.Quantile(0.5)), s+"_p99_ms", loadstat.MS(l.Quantile(0.99)))
	}
	for _, s := range steps {
		if fails[s] > 0 {
			pairs = append(pairs, "failed_"+s, fails[s])
		}
	}
	line := loadstat.KV(pairs...)
	if failed > 0 {
		return line, fmt.Errorf("%d of %d nodes failed, the first: %w", failed, c.nodes, first)
	}
	return line, nil
}
