package lab

import (
	"net"
	"strconv"
	"testing"
)

// TestFreePortOnEveryHost checks that the port freePort picks can be
// bound on each of the loopback addresses the conductors listen on.
func TestFreePortOnEveryHost(t *testing.T) {
	hosts := []string{"127.0.0.2", "127.0.0.3", "127.0.0.4"}
	port, err := freePort(hosts...)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range hosts {
		l, err := net.Listen("tcp", net.JoinHostPort(h, strconv.Itoa(port)))
		if err != nil {
			t.Fatalf("port %d on %s: %v", port, h, err)
		}
		l.Close()
	}
}

// TestIronicOptionsRefused checks that options missing a
// directory or with clashing conductor names are refused before anything
// starts, whether Ironic is installed or not.
func TestIronicOptionsRefused(t *testing.T) {
	dir := t.TempDir()
	for name, o := range map[string]IronicOptions{
		"no conductors": {Dir: dir, HostsDir: dir, OptsDir: dir, LeaseFile: dir + "/l"},
		"no dir":        {HostsDir: dir, OptsDir: dir, LeaseFile: dir + "/l", Conductors: []IronicConductor{{Name: "c"}}},
		"same name":     {Dir: dir, HostsDir: dir, OptsDir: dir, LeaseFile: dir + "/l", Conductors: []IronicConductor{{Name: "c"}, {Name: "c"}}},
		"path name":     {Dir: dir, HostsDir: dir, OptsDir: dir, LeaseFile: dir + "/l", Conductors: []IronicConductor{{Name: "a/b"}}},
	} {
		if err := o.check(); err == nil {
			t.Errorf("%s: check accepted %+v", name, o)
		}
	}
	good := IronicOptions{Dir: dir, HostsDir: dir, OptsDir: dir, LeaseFile: dir + "/l", Conductors: []IronicConductor{{Name: "c1"}, {Name: "c2"}}}
	if err := good.check(); err != nil {
		t.Errorf("check refused %+v: %v", good, err)
	}
}
