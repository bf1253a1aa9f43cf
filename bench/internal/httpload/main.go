// Command httpload is the client of bench/http.sh and bench/api.sh. In
// mode files, C clients each fetch every file once per round, whole or as
// random Range requests, and every byte is compared with the local copy.
// In mode api, it enrolls nodes through the API, boots agents for some of
// them the way a node's agent does (boot script, lookup with the boot
// secret, heartbeats) and times node lists and node pages meanwhile.
// Either prints one result line of key=value pairs; it exits non-zero when
// anything failed.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"time"
)

func main() {
	mode := flag.String("mode", "files", "files (boot HTTP downloads) or api (node list and pages under agent heartbeats)")
	var fc filesConfig
	flag.StringVar(&fc.Base, "base", "http://127.0.0.1:8080", "server base URL")
	flag.StringVar(&fc.Files, "files", "", "files mode: comma-separated PATH=LOCAL pairs, a URL path and the local file it must equal")
	flag.IntVar(&fc.Clients, "c", 100, "files mode: concurrent clients")
	flag.IntVar(&fc.Rounds, "rounds", 3, "files mode: rounds; each client fetches every file once per round")
	flag.IntVar(&fc.Ranges, "ranges", 0, "files mode: instead of whole files, this many random Range requests per file per round")
	flag.Int64Var(&fc.RangeMax, "range-max", 1<<20, "files mode: the longest range asked for, in bytes")
	var ac apiConfig
	flag.StringVar(&ac.TokenFile, "token-file", "", "api mode: the admin token file (DATA_DIR/admin.token)")
	flag.IntVar(&ac.Nodes, "nodes", 10000, "api mode: nodes to enroll")
	flag.IntVar(&ac.Agents, "agents", 1000, "api mode: agents heartbeating, each from its own 127.x address")
	flag.IntVar(&ac.Readers, "readers", 8, "api mode: concurrent readers of the node list and node pages")
	flag.DurationVar(&ac.Duration, "duration", 30*time.Second, "api mode: how long to measure")
	flag.DurationVar(&ac.Heartbeat, "heartbeat", 0, "api mode: how often each agent calls in (default: what the server's lookup answer says)")
	flag.IntVar(&ac.PageSize, "limit", 0, "api mode: the node list's page size (default: the API's)")
	flag.Parse()
	ac.Base = fc.Base

	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	var (
		line string
		err  error
	)
	switch *mode {
	case "files":
		line, err = runFiles(ctx, fc)
	case "api":
		line, err = runAPI(ctx, ac, log)
	default:
		err = fmt.Errorf("mode %q: want files or api", *mode)
	}
	if line != "" {
		fmt.Println(line)
	}
	if err != nil {
		log.Error("httpload", "mode", *mode, "err", err)
		os.Exit(1)
	}
}

// transport keeps one connection per client alive, as firmware and agents
// do, and asks for no compression: the bytes on the wire are the file's.
func transport(conns int, local net.Addr) *http.Transport {
	d := &net.Dialer{Timeout: 10 * time.Second, LocalAddr: local}
	return &http.Transport{DialContext: d.DialContext, MaxIdleConns: conns, MaxIdleConnsPerHost: conns,
		DisableCompression: true, IdleConnTimeout: time.Minute}
}
