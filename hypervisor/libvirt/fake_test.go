package libvirt

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
)

// Procedures of libvirt's remote program (remote_protocol.x) the fake
// daemon answers.
const (
	remoteProgram         = 0x20008086
	procConnectOpen       = 1
	procConnectClose      = 2
	procGetCapabilities   = 7
	procDomainLookup      = 23
	procAuthList          = 66
	procDomainOpenConsole = 201
	procDomainGetState    = 212

	packetReply  = 1
	packetStream = 3

	statusOK       = 0
	statusError    = 1
	statusContinue = 2

	errNoDomain = 42
)

const fakeCapabilities = "<capabilities><host><cpu><arch>x86_64</arch></cpu></host></capabilities>"

// fakeDaemon speaks just enough of libvirt's RPC protocol for the
// transports and error mapping to be tested without a libvirtd: the
// handshake, capabilities, domain lookup and state, and a console stream.
// It knows one domain, "vm1", which is running and whose console says
// fakeConsole.
type fakeDaemon struct {
	// silent accepts connections and never answers.
	silent bool
	// tlsVerdict is sent first, as a daemon's TLS listener does; 0 sends
	// nothing.
	tlsVerdict byte

	mu    sync.Mutex
	conns []net.Conn
}

const fakeConsole = "Booting rackboot\r\n"

// serve answers connections from l until it is closed; the test's
// cleanup closes the listener and every connection.
func (f *fakeDaemon) serve(t *testing.T, l net.Listener) {
	t.Cleanup(func() {
		l.Close()
		f.mu.Lock()
		defer f.mu.Unlock()
		for _, c := range f.conns {
			c.Close()
		}
	})
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			f.mu.Lock()
			f.conns = append(f.conns, c)
			f.mu.Unlock()
			if !f.silent {
				go f.handle(c)
			}
		}
	}()
}

func (f *fakeDaemon) handle(c net.Conn) {
	defer c.Close()
	if f.tlsVerdict != 0 {
		if _, err := c.Write([]byte{f.tlsVerdict}); err != nil || f.tlsVerdict != 1 {
			return
		}
	}
	for {
		var n uint32
		if err := binary.Read(c, binary.BigEndian, &n); err != nil || n < 28 || n > 1<<20 {
			return
		}
		buf := make([]byte, n-4)
		if _, err := io.ReadFull(c, buf); err != nil {
			return
		}
		prog := binary.BigEndian.Uint32(buf[0:])
		proc := binary.BigEndian.Uint32(buf[8:])
		serial := binary.BigEndian.Uint32(buf[16:])
		args := buf[24:]
		if prog != remoteProgram {
			return
		}
		reply := func(typ, status uint32, payload []byte) error {
			h := make([]byte, 28, 28+len(payload))
			binary.BigEndian.PutUint32(h[0:], uint32(28+len(payload)))
			binary.BigEndian.PutUint32(h[4:], remoteProgram)
			binary.BigEndian.PutUint32(h[8:], 1)
			binary.BigEndian.PutUint32(h[12:], proc)
			binary.BigEndian.PutUint32(h[16:], typ)
			binary.BigEndian.PutUint32(h[20:], serial)
			binary.BigEndian.PutUint32(h[24:], status)
			_, err := c.Write(append(h, payload...))
			return err
		}
		var err error
		switch proc {
		case procAuthList:
			err = reply(packetReply, statusOK, xdrU32(nil, 1, 0)) // one method: none
		case procConnectOpen, procConnectClose:
			err = reply(packetReply, statusOK, nil)
		case procGetCapabilities:
			err = reply(packetReply, statusOK, xdrString(nil, fakeCapabilities))
		case procDomainLookup:
			name, _ := xdrReadString(args)
			if name != "vm1" {
				err = reply(packetReply, statusError, xdrError(errNoDomain, "Domain not found: no domain with matching name '"+name+"'"))
				break
			}
			err = reply(packetReply, statusOK, fakeDomain())
		case procDomainGetState:
			err = reply(packetReply, statusOK, xdrU32(nil, 1, 1)) // running, booted
		case procDomainOpenConsole:
			if err = reply(packetReply, statusOK, nil); err == nil {
				err = reply(packetStream, statusContinue, []byte(fakeConsole))
			}
		default:
			err = reply(packetReply, statusError, xdrError(1, "unknown procedure"))
		}
		if err != nil {
			return
		}
	}
}

func fakeDomain() []byte {
	b := xdrString(nil, "vm1")
	b = append(b, 0x6f, 0x2c, 0x8a, 0x1e, 0x0b, 0x63, 0x4c, 0x4a, 0x9d, 0x5e, 0x21, 0x42, 0x3a, 0x6f, 0x1c, 0x7d)
	return xdrU32(b, 1) // id
}

func xdrU32(b []byte, vs ...uint32) []byte {
	for _, v := range vs {
		b = binary.BigEndian.AppendUint32(b, v)
	}
	return b
}

func xdrString(b []byte, s string) []byte {
	b = xdrU32(b, uint32(len(s)))
	b = append(b, s...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

func xdrReadString(b []byte) (string, error) {
	if len(b) < 4 {
		return "", errors.New("short")
	}
	n := binary.BigEndian.Uint32(b)
	if uint32(len(b)-4) < n {
		return "", errors.New("short")
	}
	return string(b[4 : 4+n]), nil
}

// xdrError is a remote_error: code, domain, message, level, then the
// optional fields, all absent.
func xdrError(code uint32, msg string) []byte {
	b := xdrU32(nil, code, 10, 1)
	b = xdrString(b, msg)
	return xdrU32(b, 2, 0, 0, 0, 0, 0, 0, 0)
}
