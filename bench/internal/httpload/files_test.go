package main

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestFetchVerifies: a benchmark that counts a wrong body as a download
// would report a server that serves garbage fast as fast.
func TestFetchVerifies(t *testing.T) {
	want := bytes.Repeat([]byte("0123456789abcdef"), 64<<10) // 1 MiB
	for _, tc := range []struct {
		name    string
		serve   http.HandlerFunc
		lo, hi  int64
		wantErr string
	}{
		{name: "whole", serve: serveBytes(want), lo: -1, hi: -1},
		{name: "range", serve: serveBytes(want), lo: 1000, hi: 300000},
		{name: "last byte", serve: serveBytes(want), lo: int64(len(want) - 1), hi: int64(len(want) - 1)},
		{name: "one byte differs", serve: serveBytes(flip(want, 777777)), lo: -1, hi: -1, wantErr: "bytes differ"},
		{name: "range differs", serve: serveBytes(flip(want, 5000)), lo: 4096, hi: 8191, wantErr: "bytes differ"},
		{name: "short", serve: serveBytes(want[:len(want)-1]), lo: -1, hi: -1, wantErr: "want 1048576"},
		{name: "long", serve: serveBytes(append(bytes.Clone(want), 'x')), lo: -1, hi: -1, wantErr: "bytes differ"},
		{name: "range ignored", serve: func(w http.ResponseWriter, r *http.Request) { w.Write(want) }, lo: 10, hi: 20, wantErr: "status 200 OK, want 206"},
		{name: "not found", serve: http.NotFound, lo: -1, hi: -1, wantErr: "404"},
		{name: "wrong content-range", serve: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Range", "bytes 0-10/1048576")
			w.WriteHeader(http.StatusPartialContent)
			w.Write(want[10:21])
		}, lo: 10, hi: 20, wantErr: "Content-Range"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(tc.serve)
			defer srv.Close()
			n, err := fetch(context.Background(), srv.Client(), srv.URL, file{path: "/f", want: want}, tc.lo, tc.hi, make([]byte, 4096))
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("fetch: %v", err)
				}
				wantN := int64(len(want))
				if tc.lo >= 0 {
					wantN = tc.hi - tc.lo + 1
				}
				if n != wantN {
					t.Errorf("read %d bytes, want %d", n, wantN)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("fetch: %v, want an error with %q", err, tc.wantErr)
			}
		})
	}
}

func serveBytes(b []byte) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		http.ServeContent(w, r, "f", time.Time{}, bytes.NewReader(b))
	}
}

func flip(b []byte, i int) []byte {
	c := bytes.Clone(b)
	c[i] ^= 0xff
	return c
}
