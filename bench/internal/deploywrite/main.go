// Command deploywrite runs the agent's image write path once, from a URL
// to a target file or device, and prints the seconds it took: the bench
// script times it beside curl | zstd -d | dd.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"time"

	"github.com/rackboot/rackboot/agent/deploy"
)

func main() {
	url := flag.String("url", "", "image URL")
	format := flag.String("format", "raw.zst", "image format")
	sum := flag.String("sha256", "", "sha256 of the file served")
	target := flag.String("target", "", "file or device to write")
	flag.Parse()
	start := time.Now()
	res, err := deploy.Write(context.Background(), &http.Client{}, deploy.Image{URL: *url, Format: *format, SHA256: *sum}, *target, nil)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Fprintf(os.Stdout, "%.3f %d %v\n", time.Since(start).Seconds(), res.Written, res.Verified)
}
