package trace

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/rackboot/rackboot/boot"
)

var t0 = time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)

func ev(sec int, proto, kind, file string, opts map[string]string) boot.Event {
	return boot.Event{Time: t0.Add(time.Duration(sec) * time.Second), Proto: proto, Kind: kind, File: file, Options: opts, Size: -1}
}

func fileEv(sec int, proto, file string, bytes, size int64, complete bool) boot.Event {
	e := ev(sec, proto, "file", file, nil)
	e.Bytes, e.Size, e.Complete = bytes, size, complete
	return e
}

var (
	fw   = map[string]string{"93": "7", "60": "PXEClient:Arch:00007:UNDI:003000"}
	ipxe = map[string]string{"93": "7", "77": "iPXE"}
	// agentOpts are the agent's DHCP: its user class, no client arch.
	agentOpts = map[string]string{"60": "PXE UROOT", "77": "rackboot-agent"}
	plan      = map[string]string{OptAction: "netboot", OptKernel: "http://10.0.0.1:8080/artifacts/x86_64/vmlinuz", OptInitrds: "http://10.0.0.1:8080/artifacts/x86_64/initrd"}
)

func offer(sec int, file string) boot.Event {
	e := ev(sec, "dhcp", "offer", file, nil)
	e.IP = netip.MustParseAddr("10.0.0.50")
	return e
}

func firmwareDHCP(sec int) []boot.Event {
	return []boot.Event{ev(sec, "dhcp", "discover", "", fw), offer(sec, "ipxe/snponly.efi"), ev(sec+1, "dhcp", "request", "", fw), ev(sec+1, "dhcp", "ack", "ipxe/snponly.efi", fw)}
}

func TestSummarize(t *testing.T) {
	full := append(firmwareDHCP(0),
		fileEv(2, "tftp", "ipxe/snponly.efi", 1000, 1000, true),
		ev(10, "dhcp", "discover", "", ipxe), ev(10, "dhcp", "offer", "http://10.0.0.1:8080/boot.ipxe", ipxe),
		fileEv(11, "http", "/boot.ipxe", 100, 100, true),
		ev(11, ProtoCore, KindPlan, "", plan),
		fileEv(11, "http", "/ipxe/52-54-00-12-34-56", 300, 300, true),
		fileEv(12, "http", "/artifacts/x86_64/vmlinuz", 5000, 5000, true),
	)
	tests := []struct {
		name   string
		events []boot.Event
		boots  int
		stage  Stage
	}{
		{"no offer", []boot.Event{ev(0, "dhcp", "discover", "", fw)}, 1, StageDHCP},
		{"offer never fetched", firmwareDHCP(0), 1, StageOffer},
		{"loader cut short", append(firmwareDHCP(0), fileEv(2, "tftp", "ipxe/snponly.efi", 500, 1000, false)), 1, StageOffer},
		{"loader but no config", append(firmwareDHCP(0), fileEv(2, "tftp", "ipxe/snponly.efi", 1000, 1000, true)), 1, StageLoader},
		{"initrd incomplete", append(append([]boot.Event{}, full...), fileEv(13, "http", "/artifacts/x86_64/initrd", 10, 9000, false)), 1, StageKernel},
		{"handover", append(append([]boot.Event{}, full...), fileEv(13, "http", "/artifacts/x86_64/initrd", 9000, 9000, true)), 1, StageHandover},
		{"local", append(firmwareDHCP(0), fileEv(2, "tftp", "ipxe/snponly.efi", 1000, 1000, true),
			ev(3, ProtoCore, KindPlan, "", map[string]string{OptAction: "local"}), fileEv(3, "http", "/ipxe/52-54-00-12-34-56", 30, 30, true)), 1, StageLocal},
		{"two boots", append(append([]boot.Event{}, full...), firmwareDHCP(20)...), 2, StageOffer},
		// The agent's DHCP belongs to the boot that loaded it; its lookup
		// is the boot's last stage.
		{"agent called in", append(append([]boot.Event{}, full...), fileEv(13, "http", "/artifacts/x86_64/initrd", 9000, 9000, true),
			ev(40, "dhcp", "discover", "", agentOpts), ev(40, "dhcp", "ack", "", agentOpts), ev(45, "agent", "lookup", "", nil)), 1, StageAgent},
		{"agent silent", append(append([]boot.Event{}, full...), fileEv(13, "http", "/artifacts/x86_64/initrd", 9000, 9000, true),
			ev(40, "dhcp", "discover", "", agentOpts), ev(40, "dhcp", "ack", "", agentOpts)), 1, StageHandover},
		{"grub over tftp", append([]boot.Event{ev(0, "dhcp", "discover", "", fw), offer(0, "efi/aa64/grubnetaa64.efi")},
			fileEv(2, "tftp", "efi/aa64/grubnetaa64.efi", 10, 10, true), fileEv(3, "tftp", "grub/grub.cfg", 10, 10, true)), 1, StageConfig},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			boots := Summarize(tt.events)
			if len(boots) != tt.boots {
				t.Fatalf("%d boots, want %d: %+v", len(boots), tt.boots, boots)
			}
			last := boots[len(boots)-1]
			if last.Stage != tt.stage {
				t.Errorf("stage %d (%s), want %d", last.Stage, last.Verdict, tt.stage)
			}
			if last.Verdict == "" || len(last.Steps) == 0 {
				t.Errorf("empty verdict or steps: %+v", last)
			}
		})
	}
}

func TestAgentWaitsForEntropyVerdict(t *testing.T) {
	noRNG := map[string]string{"60": "PXE UROOT", "77": "rackboot-agent,no-rng"}
	events := append(firmwareDHCP(0), fileEv(2, "tftp", "ipxe/snponly.efi", 1000, 1000, true), ev(11, ProtoCore, KindPlan, "", plan),
		fileEv(12, "http", "/artifacts/x86_64/vmlinuz", 5000, 5000, true), fileEv(13, "http", "/artifacts/x86_64/initrd", 9000, 9000, true),
		ev(40, "dhcp", "discover", "", noRNG), ev(40, "dhcp", "ack", "", noRNG))
	b := Summarize(events)
	if len(b) != 1 || !strings.Contains(b[0].Verdict, "waiting for the kernel's random pool") || !strings.Contains(b[0].Verdict, "no hardware RNG") {
		t.Errorf("boots %+v: want one whose verdict says the agent waits for entropy", b)
	}
	// Once it calls in, that is the boot's end.
	b = Summarize(append(events, ev(400, "agent", "lookup", "", nil)))
	if len(b) != 1 || b[0].Stage != StageAgent {
		t.Errorf("after a late lookup: %+v", b)
	}
}

func TestAgentSilentVerdict(t *testing.T) {
	events := append(firmwareDHCP(0), fileEv(2, "tftp", "ipxe/snponly.efi", 1000, 1000, true), ev(11, ProtoCore, KindPlan, "", plan),
		fileEv(12, "http", "/artifacts/x86_64/vmlinuz", 5000, 5000, true), fileEv(13, "http", "/artifacts/x86_64/initrd", 9000, 9000, true),
		ev(40, "dhcp", "discover", "", agentOpts))
	b := Summarize(events)
	if len(b) != 1 || !strings.Contains(b[0].Verdict, "has not called in") {
		t.Errorf("boots %+v: want one whose verdict says the agent has not called in", b)
	}
}

func TestVerdictText(t *testing.T) {
	b := Summarize(append(firmwareDHCP(0), fileEv(2, "tftp", "ipxe/snponly.efi", 1000, 1000, true)))
	if got, want := b[0].Verdict, "got the loader, never asked for its config"; got != want {
		t.Errorf("verdict %q, want %q", got, want)
	}
	if b[0].Client != "arch 7, PXEClient:Arch:00007:UNDI:003000" {
		t.Errorf("client %q", b[0].Client)
	}
}
