package hypervisor

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/rackboot/rackboot/hypervisor/libvirt"
)

// LibvirtDialer dials hypervisors over libvirt's RPC protocol (package
// libvirt) with opt: the TLS client certificate, the SSH key and the
// pinned host keys.
func LibvirtDialer(opt libvirt.Options) Dialer {
	return func(ctx context.Context, uri string) (Conn, error) {
		c, err := libvirt.Dial(ctx, uri, opt)
		if err != nil {
			return nil, err
		}
		return libvirtConn{c}, nil
	}
}

// libvirtConn is a libvirt.Conn as a Conn: what the daemon does not have
// is ErrGone.
type libvirtConn struct{ c *libvirt.Conn }

func gone(err error) error {
	if errors.Is(err, libvirt.ErrNotFound) {
		return fmt.Errorf("%w: %w", ErrGone, err)
	}
	return err
}

func (l libvirtConn) Capabilities(ctx context.Context) (string, error) { return l.c.Capabilities(ctx) }

func (l libvirtConn) CreateVolume(ctx context.Context, pool, name string, bytes int64) (string, error) {
	p, err := l.c.CreateVolume(ctx, pool, name, bytes)
	return p, gone(err)
}

func (l libvirtConn) DeleteVolume(ctx context.Context, pool, name string) error {
	return gone(l.c.DeleteVolume(ctx, pool, name))
}

func (l libvirtConn) Define(ctx context.Context, xml string) error {
	_, err := l.c.Define(ctx, xml)
	return err
}

func (l libvirtConn) Start(ctx context.Context, name string) error {
	return gone(l.c.Start(ctx, name))
}

func (l libvirtConn) Shutdown(ctx context.Context, name string) error {
	return gone(l.c.Shutdown(ctx, name))
}

func (l libvirtConn) Reboot(ctx context.Context, name string) error {
	return gone(l.c.Reboot(ctx, name))
}

func (l libvirtConn) Destroy(ctx context.Context, name string) error {
	return gone(l.c.Destroy(ctx, name))
}

func (l libvirtConn) Undefine(ctx context.Context, name string) error {
	return gone(l.c.Undefine(ctx, name))
}

func (l libvirtConn) State(ctx context.Context, name string) (string, error) {
	st, err := l.c.State(ctx, name)
	return string(st), gone(err)
}

func (l libvirtConn) Console(ctx context.Context, name string, w io.Writer) error {
	return gone(l.c.Console(ctx, name, w))
}

func (l libvirtConn) Close() error { return l.c.Close() }
