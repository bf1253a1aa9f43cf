package main

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"time"
)

const (
	opRRQ   = 1
	opData  = 3
	opAck   = 4
	opError = 5
	opOACK  = 6
)

// tftpGet fetches file from server the way firmware does: from the
// node's own address, lock-step, with blksize and tsize asked for, each
// packet sent again after a second without an answer, 5 times at most.
// It returns the bytes received and the packets sent again.
func tftpGet(from netip.Addr, server netip.AddrPort, file string, blksize int) (int64, int, error) {
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: from.AsSlice()})
	if err != nil {
		return 0, 0, fmt.Errorf("tftp %s: socket: %w", file, err)
	}
	defer c.Close()
	var rrq bytes.Buffer
	rrq.Write([]byte{0, opRRQ})
	for _, s := range []string{file, "octet", "blksize", strconv.Itoa(blksize), "tsize", "0"} {
		rrq.WriteString(s)
		rrq.WriteByte(0)
	}
	dst := net.UDPAddrFromAddrPort(server)
	last := rrq.Bytes()
	peer := (*net.UDPAddr)(nil)
	buf := make([]byte, 65536)
	var got, size int64 = 0, -1
	want := uint16(1)
	blk := 512
	again, timeouts := 0, 0
	send := func() error {
		to := dst
		if peer != nil {
			to = peer
		}
		_, err := c.WriteToUDP(last, to)
		return err
	}
	if err := send(); err != nil {
		return 0, 0, fmt.Errorf("tftp %s: %w", file, err)
	}
	for {
		c.SetReadDeadline(time.Now().Add(time.Second))
		n, addr, err := c.ReadFromUDP(buf)
		if err != nil {
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				return got, again, fmt.Errorf("tftp %s: %w", file, err)
			}
			if timeouts++; timeouts > 5 {
				return got, again, fmt.Errorf("tftp %s: no answer at block %d after 5 tries", file, want)
			}
			again++
			if err := send(); err != nil {
				return got, again, fmt.Errorf("tftp %s: %w", file, err)
			}
			continue
		}
		if n < 4 || (peer != nil && !addr.IP.Equal(peer.IP)) || (peer != nil && addr.Port != peer.Port) {
			continue
		}
		if peer == nil {
			peer = addr
		}
		p := buf[:n]
		switch binary.BigEndian.Uint16(p) {
		case opError:
			return got, again, fmt.Errorf("tftp %s: error %d: %s", file, binary.BigEndian.Uint16(p[2:]), bytes.TrimRight(p[4:], "\x00"))
		case opOACK:
			opts := bytes.Split(bytes.TrimRight(p[2:], "\x00"), []byte{0})
			for i := 0; i+1 < len(opts); i += 2 {
				v, _ := strconv.Atoi(string(opts[i+1]))
				switch string(bytes.ToLower(opts[i])) {
				case "blksize":
					blk = v
				case "tsize":
					size = int64(v)
				}
			}
			last = []byte{0, opAck, 0, 0}
		case opData:
			b := binary.BigEndian.Uint16(p[2:])
			if b != want {
				continue // a duplicate: the ACK sent already answers it
			}
			timeouts = 0
			got += int64(n - 4)
			last = []byte{0, opAck, byte(b >> 8), byte(b)}
			want++
			if n-4 < blk {
				if err := send(); err != nil {
					return got, again, fmt.Errorf("tftp %s: %w", file, err)
				}
				if size >= 0 && got != size {
					return got, again, fmt.Errorf("tftp %s: %d bytes, tsize said %d", file, got, size)
				}
				return got, again, nil
			}
		default:
			continue
		}
		if err := send(); err != nil {
			return got, again, fmt.Errorf("tftp %s: %w", file, err)
		}
	}
}
