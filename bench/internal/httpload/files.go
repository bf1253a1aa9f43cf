package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/rackboot/rackboot/bench/internal/loadstat"
)

type filesConfig struct {
	Base, Files             string
	Clients, Rounds, Ranges int
	RangeMax                int64
}

// file is one URL path and the bytes it must serve.
type file struct {
	path string
	want []byte
}

func parseFiles(spec string) ([]file, error) {
	var out []file
	for _, pair := range strings.Split(spec, ",") {
		path, local, ok := strings.Cut(pair, "=")
		if !ok || path == "" || local == "" {
			return nil, fmt.Errorf("parse files: %q is not PATH=LOCAL", pair)
		}
		b, err := os.ReadFile(local)
		if err != nil {
			return nil, fmt.Errorf("parse files: %w", err)
		}
		if len(b) == 0 {
			return nil, fmt.Errorf("parse files: %s is empty", local)
		}
		out = append(out, file{path: "/" + strings.TrimPrefix(path, "/"), want: b})
	}
	return out, nil
}

// runFiles runs the clients and returns the result line. Every body is
// compared with the file's bytes; a short, long or different body, a
// wrong status or Content-Range, or a transport error is a failure.
func runFiles(ctx context.Context, c filesConfig) (string, error) {
	files, err := parseFiles(c.Files)
	if err != nil {
		return "", err
	}
	if c.Clients <= 0 || c.Rounds <= 0 || c.Ranges < 0 || c.RangeMax <= 0 {
		return "", errors.New("files: -c, -rounds and -range-max must be positive, -ranges not negative")
	}
	client := &http.Client{Transport: transport(c.Clients, nil), Timeout: 5 * time.Minute}
	type result struct {
		lat          loadstat.Latencies
		bytes        int64
		fails        int
		firstFailure error
	}
	results := make([]result, c.Clients)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range c.Clients {
		wg.Go(func() {
			r := &results[i]
			rng := rand.New(rand.NewPCG(uint64(i), 18))
			buf := make([]byte, 256<<10)
			one := func(f file, lo, hi int64) {
				t0 := time.Now()
				n, err := fetch(ctx, client, c.Base, f, lo, hi, buf)
				r.bytes += n
				if err != nil {
					r.fails++
					if r.firstFailure == nil {
						r.firstFailure = err
					}
					return
				}
				r.lat = append(r.lat, time.Since(t0))
			}
			for range c.Rounds {
				for _, f := range files {
					if c.Ranges == 0 {
						one(f, -1, -1)
						continue
					}
					size := int64(len(f.want))
					for range c.Ranges {
						lo := rng.Int64N(size)
						hi := min(size-1, lo+rng.Int64N(c.RangeMax))
						one(f, lo, hi)
					}
				}
			}
		})
	}
	wg.Wait()
	secs := time.Since(start).Seconds()
	var all loadstat.Latencies
	var bytes int64
	fails := 0
	var first error
	for _, r := range results {
		all = append(all, r.lat...)
		bytes += r.bytes
		fails += r.fails
		if first == nil {
			first = r.firstFailure
		}
	}
	mode := "whole"
	if c.Ranges > 0 {
		mode = "range"
	}
	line := loadstat.KV("httpload", "files", "mode", mode, "clients", c.Clients, "requests", len(all)+fails, "failures", fails,
		"bytes", bytes, "seconds", fmt.Sprintf("%.3f", secs),
		"mbps", fmt.Sprintf("%.1f", float64(bytes)/1e6/secs), "rps", fmt.Sprintf("%.1f", float64(len(all))/secs),
		"p50_ms", loadstat.MS(all.Quantile(0.5)), "p99_ms", loadstat.MS(all.Quantile(0.99)))
	if fails > 0 {
		return line, fmt.Errorf("files: %d of %d requests failed, the first: %w", fails, len(all)+fails, first)
	}
	return line, nil
}

// fetch gets f whole (lo < 0) or its bytes lo..hi and compares them with
// the file's, through buf. It returns the body bytes read.
func fetch(ctx context.Context, client *http.Client, base string, f file, lo, hi int64, buf []byte) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+f.path, nil)
	if err != nil {
		return 0, fmt.Errorf("get %s: %w", f.path, err)
	}
	want, status := f.want, http.StatusOK
	if lo >= 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", lo, hi))
		want, status = f.want[lo:hi+1], http.StatusPartialContent
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, fmt.Errorf("get %s: %w", f.path, err)
	}
	defer loadstat.Drain(resp.Body)
	if resp.StatusCode != status {
		return 0, fmt.Errorf("get %s %q: status %s, want %d", f.path, req.Header.Get("Range"), resp.Status, status)
	}
	if lo >= 0 {
		if cr, wantCR := resp.Header.Get("Content-Range"), fmt.Sprintf("bytes %d-%d/%d", lo, hi, len(f.want)); cr != wantCR {
			return 0, fmt.Errorf("get %s: Content-Range %q, want %q", f.path, cr, wantCR)
		}
	}
	var got int64
	for {
		n, err := resp.Body.Read(buf)
		if n > 0 {
			if got+int64(n) > int64(len(want)) || !bytes.Equal(buf[:n], want[got:got+int64(n)]) {
				return got + int64(n), fmt.Errorf("get %s %q: bytes differ from the file's at offset %d or beyond", f.path, req.Header.Get("Range"), got)
			}
			got += int64(n)
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return got, fmt.Errorf("get %s: after %d bytes: %w", f.path, got, err)
		}
	}
	if got != int64(len(want)) {
		return got, fmt.Errorf("get %s %q: %d bytes, want %d", f.path, req.Header.Get("Range"), got, len(want))
	}
	return got, nil
}
