package ramdisk

import (
	"bytes"
	"debug/buildinfo"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/rackboot/rackboot/images/ramdisk/payload"
	"github.com/rackboot/rackboot/internal/cpio"
)

// The files u-root's builder puts in every initramfs: a GMT time zone and
// a resolver; init creates the rest (/dev is devtmpfs, /proc, /sys, /tmp
// are mounted).
const (
	gmt0       = "TZif2\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x04\x00\x00\x00\x00\x00\x00GMT\x00\x00\x00TZif2\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x01\x00\x00\x00\x04\xf8\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00GMT\x00\x00\x00\nGMT0\n"
	nameserver = "nameserver 8.8.8.8\n"
)

// Init and Shell are the programs the base archive needs besides the
// uinit's: /init runs init, which runs /bin/uinit and, should that end,
// the shell on the console.
const (
	Init  = "init"
	Shell = "gosh"
)

// baseArchive packs the programs into a newc archive laid out as u-root's
// builder lays out its own, with each program a binary of its own in
// /bin instead of one multiplexer: /init → bin/init; /bin/uinit → the
// uinit's program, its arguments in /etc/uinit.flags (one quoted argument
// a line, which init passes on); /bin/sh and /bin/defaultsh → gosh.
// baseDevices are the device nodes of every ramdisk, which baseArchive
// makes.
var baseDevices = []string{"dev/console", "dev/tty", "dev/null", "dev/port", "dev/urandom"}

// baseDirList are the directories of every ramdisk.
var baseDirList = []string{"bin", "dev", "env", "etc", "lib64", "proc", "sys", "tcz", "tmp", "ubin", "usr", "usr/lib", "var", "var/log", "var/lock"}

func baseArchive(progs []payload.Program, uinit string) ([]byte, error) {
	args := strings.Fields(uinit)
	if len(args) == 0 {
		return nil, fmt.Errorf("pack ramdisk: empty uinit")
	}
	have := map[string]bool{}
	for _, p := range progs {
		have[p.Name] = true
	}
	for _, n := range []string{Init, Shell, args[0]} {
		if !have[n] {
			return nil, fmt.Errorf("pack ramdisk: no program %s in the payload", n)
		}
	}
	var buf bytes.Buffer
	c := cpio.New(&buf)
	for _, d := range baseDirList {
		perm := uint32(0o755)
		if d == "tmp" || d == "var/log" || d == "var/lock" {
			perm = 0o777
		}
		c.Dir(d, perm)
	}
	c.CharDev("dev/console", 0o600, 5, 1)
	c.CharDev("dev/tty", 0o666, 5, 0)
	c.CharDev("dev/null", 0o666, 1, 3)
	c.CharDev("dev/port", 0o640, 1, 4)
	c.CharDev("dev/urandom", 0o666, 1, 9)
	c.File("etc/resolv.conf", 0o644, []byte(nameserver))
	c.File("etc/localtime", 0o644, []byte(gmt0))
	for _, p := range progs {
		c.File("bin/"+p.Name, 0o755, p.Data)
	}
	c.Symlink("bin/uinit", args[0])
	if len(args) > 1 {
		q := make([]string, len(args)-1)
		for i, a := range args[1:] {
			q[i] = strconv.Quote(a)
		}
		c.File("etc/uinit.flags", 0o444, []byte(strings.Join(q, "\n")))
	}
	c.Symlink("init", "bin/"+Init)
	c.Symlink("bin/sh", Shell)
	c.Symlink("bin/defaultsh", Shell)
	if err := c.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// urootVersion is the version of u-root that init was built from, as its
// build information records it, or "" when it records none.
func urootVersion(progs []payload.Program) string {
	i := slices.IndexFunc(progs, func(p payload.Program) bool { return p.Name == Init })
	if i < 0 {
		return ""
	}
	bi, err := buildinfo.Read(bytes.NewReader(progs[i].Data))
	if err != nil {
		return ""
	}
	if bi.Main.Path == urootModule {
		return bi.Main.Version
	}
	for _, d := range bi.Deps {
		if d.Path == urootModule {
			if d.Replace != nil {
				return d.Version + "=>" + d.Replace.Path + "@" + d.Replace.Version
			}
			return d.Version
		}
	}
	return ""
}

// urootModule is the module init and the shell come from; go.mod pins its
// version (tools.go keeps its commands there).
const urootModule = "github.com/u-root/u-root"
