// Command tftpserve serves one directory with rackboot's TFTP server and
// nothing else, for benchmarks against other TFTP servers (bench/tftp.sh)
// and for trying clients by hand. The appliance itself serves TFTP from
// `rackboot serve`.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/rackboot/rackboot/tftp"
)

func main() {
	root := flag.String("root", ".", "directory to serve")
	addr := flag.String("addr", "127.0.0.1:6969", "UDP address to listen on")
	maxBlock := flag.Int("max-blksize", 0, "largest blksize to grant (0: 65464)")
	maxWindow := flag.Int("max-windowsize", 0, "largest windowsize to grant (0: 64)")
	verbose := flag.Bool("v", false, "log every transfer")
	flag.Parse()
	if err := run(*root, *addr, *maxBlock, *maxWindow, *verbose); err != nil {
		fmt.Fprintln(os.Stderr, "tftpserve:", err)
		os.Exit(1)
	}
}

func run(root, addr string, maxBlock, maxWindow int, verbose bool) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	files, err := tftp.NewDir(root)
	if err != nil {
		return err
	}
	conn, err := net.ListenPacket("udp", addr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", addr, err)
	}
	defer conn.Close()
	s := &tftp.Server{Files: files, MaxBlockSize: maxBlock, MaxWindowSize: maxWindow}
	if verbose {
		s.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	err = s.Serve(ctx, conn)
	st := s.Stats()
	fmt.Fprintf(os.Stderr, "tftpserve: %d requests, %d complete, %d bytes, %d malformed, %d errors, %d retransmits\n",
		st.Requests, st.Completed, st.Bytes, st.Malformed, st.Errors, st.Retransmits)
	return err
}
