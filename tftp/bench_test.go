package tftp

import (
	"bytes"
	"context"
	"net/netip"
	"strconv"
	"testing"
)

// BenchmarkTransfer fetches 8 MiB over loopback with the test client.
func BenchmarkTransfer(b *testing.B) {
	file := randomBytes(8<<20, 7)
	s := &Server{Files: FilesFunc(func(context.Context, netip.AddrPort, string) (File, error) { return NewBytes(file), nil })}
	addr := startServer(b, s)
	for _, window := range []int{1, 16} {
		b.Run("blksize=1468/windowsize="+strconv.Itoa(window), func(b *testing.B) {
			c := testClient{options: []Option{{"blksize", "1468"}, {"windowsize", strconv.Itoa(window)}}}
			b.SetBytes(int64(len(file)))
			for b.Loop() {
				res, err := c.get(b.Context(), addr, "f")
				if err != nil {
					b.Fatal(err)
				}
				if !bytes.Equal(res.data, file) {
					b.Fatal("content differs")
				}
			}
		})
	}
}
