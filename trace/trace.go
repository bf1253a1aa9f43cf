// Package trace turns a node's stream of boot events into boots, each a
// list of steps and a verdict that says where it stopped: "got the loader,
// never asked for its config". It is pure logic over boot.Events, shared by
// the API and the CLI.
package trace

import (
	"fmt"
	"path"
	"strings"
	"time"

	"github.com/rackboot/rackboot/agent/protocol"
	"github.com/rackboot/rackboot/boot"
)

// ProtoCore marks events the core itself records (the plan it handed out),
// beside the protocol servers' "dhcp", "tftp" and "http".
const ProtoCore = "core"

// Plan event options: what the core told the node to boot.
const (
	KindPlan     = "plan"
	OptAction    = "action"
	OptKernel    = "kernel"
	OptInitrds   = "initrds" // space-separated
	newBootAfter = 2 * time.Minute
)

// Stage is how far a boot got, in boot order.
type Stage int

// Boot stages.
const (
	StageNone     Stage = iota
	StageDHCP           // asked DHCP
	StageOffer          // got a boot offer
	StageLoader         // fetched the loader in full
	StageConfig         // fetched its script or config
	StageKernel         // fetched the kernel in full
	StageInitrd         // fetched every initrd in full
	StageLocal          // was told to boot from its disk
	StageHandover       // fetched everything: the OS has it now
	StageAgent          // the agent it booted called in
)

var stageNames = []string{"none", "dhcp", "offer", "loader", "config", "kernel", "initrd", "local", "handover", "agent"}

func (s Stage) String() string {
	if int(s) >= 0 && int(s) < len(stageNames) {
		return stageNames[s]
	}
	return fmt.Sprintf("stage(%d)", int(s))
}

// MarshalText spells a stage as its name, as the API and UI show it.
func (s Stage) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText reads a stage's name.
func (s *Stage) UnmarshalText(b []byte) error {
	for i, n := range stageNames {
		if n == string(b) {
			*s = Stage(i)
			return nil
		}
	}
	return fmt.Errorf("unknown boot stage %q", b)
}

// Step is one event of a boot, as a person reads it.
type Step struct {
	Time   time.Time `json:"time"`
	Proto  string    `json:"proto"`
	What   string    `json:"what"`
	Detail string    `json:"detail,omitempty"`
	OK     bool      `json:"ok"`
}

// Boot is one network boot of a node.
type Boot struct {
	Start   time.Time `json:"start"`
	Client  string    `json:"client,omitempty"` // option 93 / vendor class
	Stage   Stage     `json:"stage"`
	Verdict string    `json:"verdict"`
	Steps   []Step    `json:"steps"`
}

// Summarize splits events (oldest first) into boots and judges each.
func Summarize(events []boot.Event) []Boot {
	var boots []Boot
	var cur []boot.Event
	for i, e := range events {
		if i > 0 && startsBoot(events[i-1], e) && len(cur) > 0 {
			boots = append(boots, judge(cur))
			cur = nil
		}
		cur = append(cur, e)
	}
	if len(cur) > 0 {
		boots = append(boots, judge(cur))
	}
	return boots
}

// startsBoot reports whether e, following prev, is the firmware's first
// DHCP message of a new boot. iPXE's own DHCP belongs to the boot that
// loaded it, and firmware retransmissions belong to the boot they retry.
func startsBoot(prev, e boot.Event) bool {
	// The agent may call in minutes after its boot (a random pool that
	// takes long to seed): it is still that boot.
	if e.Proto == protocol.ProtoAgent || isAgent(e) {
		return false
	}
	if e.Time.Sub(prev.Time) > newBootAfter {
		return true
	}
	if e.Proto != "dhcp" || e.Kind != "discover" || isIPXE(e) || isAgent(e) {
		return false
	}
	return prev.Proto != "dhcp" || isIPXE(prev)
}

func isIPXE(e boot.Event) bool {
	return strings.Contains(e.Options["77"], "iPXE") || e.Options["175"] != ""
}

// isAgent reports whether e is the agent's own DHCP, which belongs to the
// boot that loaded the agent.
func isAgent(e boot.Event) bool { return boot.IsAgentUserClass(e.Options["77"]) }

type judgement struct {
	b                    Boot
	offered              string
	loaderOK, loaderSeen bool
	config               bool
	kernel, action       string
	initrds              map[string]bool
	kernelOK             bool
	lastFail             string
	// agentDHCP and agentCalled: the agent asked DHCP; it looked its
	// node up. agentNoRNG: its DHCP said its random pool was not seeded.
	agentDHCP, agentCalled, agentNoRNG bool
}

func judge(events []boot.Event) Boot {
	j := &judgement{b: Boot{Start: events[0].Time}, initrds: map[string]bool{}}
	for _, e := range events {
		j.step(e)
	}
	j.b.Stage, j.b.Verdict = j.verdict()
	return j.b
}

func (j *judgement) add(e boot.Event, what, detail string, ok bool) {
	j.b.Steps = append(j.b.Steps, Step{Time: e.Time, Proto: e.Proto, What: what, Detail: detail, OK: ok})
}

func (j *judgement) step(e boot.Event) {
	switch e.Proto {
	case "dhcp":
		j.dhcp(e)
	case protocol.ProtoAgent:
		if e.Kind == protocol.KindLookup {
			j.agentCalled = true
			j.add(e, "agent called in", "from "+e.IP.String(), true)
		}
	case ProtoCore:
		if e.Kind == KindPlan {
			j.action = e.Options[OptAction]
			j.kernel = e.Options[OptKernel]
			for _, f := range strings.Fields(e.Options[OptInitrds]) {
				j.initrds[f] = false
			}
			j.add(e, "plan", planDetail(e), true)
		}
	default:
		j.file(e)
	}
}

func planDetail(e boot.Event) string {
	if e.Options[OptAction] == string(boot.ActionLocal) {
		return "boot from local disk"
	}
	return strings.TrimSpace(fmt.Sprintf("kernel %s initrd %s", e.Options[OptKernel], e.Options[OptInitrds]))
}

func (j *judgement) dhcp(e boot.Event) {
	who := "firmware"
	switch {
	case isIPXE(e):
		who = "iPXE"
	case isAgent(e):
		who = "agent"
		j.agentDHCP = true
		j.agentNoRNG = j.agentNoRNG || strings.Contains(e.Options["77"], ","+boot.AgentNoRNG)
	}
	switch e.Kind {
	case "discover", "request", "inform":
		if j.b.Stage < StageDHCP {
			j.b.Stage = StageDHCP
		}
		if j.b.Client == "" {
			j.b.Client = clientText(e)
		}
		j.add(e, who+" "+e.Kind, clientText(e), true)
	case "offer", "ack":
		ip := ""
		if e.IP.IsValid() {
			ip = e.IP.String() + " "
		}
		if e.File == "" {
			j.add(e, e.Kind, ip+"without a boot file", false)
			return
		}
		if who == "firmware" || j.offered == "" {
			if !isIPXE(e) && !isAgent(e) {
				j.offered = e.File
			}
		}
		j.add(e, e.Kind, ip+"boot file "+e.File, true)
	case "nak":
		j.add(e, "nak", e.Error, false)
	default:
		j.add(e, e.Kind, e.Error, e.Error == "")
	}
}

func clientText(e boot.Event) string {
	var parts []string
	if v := e.Options["93"]; v != "" {
		parts = append(parts, "arch "+v)
	}
	if v := e.Options["60"]; v != "" {
		parts = append(parts, v)
	}
	if v := e.Options["77"]; v != "" {
		parts = append(parts, "user class "+v)
	}
	return strings.Join(parts, ", ")
}

func sameFile(a, b string) bool {
	if a == "" || b == "" {
		return false
	}
	a, b = strings.TrimPrefix(urlPath(a), "/"), strings.TrimPrefix(urlPath(b), "/")
	return a == b || strings.HasSuffix(a, "/"+b) || strings.HasSuffix(b, "/"+a)
}

// urlPath reduces an http:// URL to its path; TFTP paths pass through.
func urlPath(s string) string {
	if i := strings.Index(s, "://"); i >= 0 {
		rest := s[i+3:]
		if k := strings.IndexByte(rest, '/'); k >= 0 {
			s = rest[k:]
		} else {
			s = "/"
		}
	}
	if k := strings.IndexAny(s, "?#"); k >= 0 {
		s = s[:k]
	}
	return s
}

func isConfig(file string) bool {
	p := urlPath(file)
	base := path.Base(p)
	return strings.HasSuffix(base, ".ipxe") || strings.HasSuffix(base, ".cfg") || strings.Contains(p, "/ipxe/") || strings.HasPrefix(p, "ipxe/") && !strings.Contains(base, ".")
}

func (j *judgement) file(e boot.Event) {
	size := "?"
	if e.Size >= 0 {
		size = fmt.Sprint(e.Size)
	}
	detail := fmt.Sprintf("%s %d/%s bytes", e.File, e.Bytes, size)
	if e.BlockSize > 0 {
		detail += fmt.Sprintf(", blksize %d, window %d", e.BlockSize, max(e.WindowSize, 1))
	}
	if e.Error != "" {
		detail += ": " + e.Error
	}
	what := "file"
	switch {
	case sameFile(e.File, j.offered) && !isConfig(e.File):
		what = "loader"
		j.loaderSeen = true
		j.loaderOK = j.loaderOK || e.Complete
	case sameFile(e.File, j.kernel):
		what = "kernel"
		j.kernelOK = j.kernelOK || e.Complete
	case j.initrdMatch(e.File) != "":
		what = "initrd"
		if e.Complete {
			j.initrds[j.initrdMatch(e.File)] = true
		}
	case isConfig(e.File):
		what = "config"
		j.config = j.config || e.Complete
	}
	if !e.Complete && e.Error == "" {
		detail += " (incomplete)"
	}
	if !e.Complete {
		j.lastFail = what + " " + detail
	}
	j.add(e, what, detail, e.Complete)
}

func (j *judgement) initrdMatch(file string) string {
	for f := range j.initrds {
		if sameFile(file, f) {
			return f
		}
	}
	return ""
}

func (j *judgement) verdict() (Stage, string) {
	failed := ""
	if j.lastFail != "" {
		failed = "; last failure: " + j.lastFail
	}
	switch {
	case j.action == string(boot.ActionLocal) && j.config:
		return StageLocal, "was told to boot from its local disk"
	case j.kernel != "" && j.kernelOK && j.allInitrds() && j.agentCalled:
		return StageAgent, "fetched its kernel and initrd, and its agent called in"
	case j.kernel != "" && j.kernelOK && j.allInitrds() && j.agentNoRNG:
		return StageHandover, "fetched its kernel and initrd; its agent got a DHCP lease and is waiting for the kernel's random pool before it can call in: this machine has no hardware RNG (give a VM virtio-rng)"
	case j.kernel != "" && j.kernelOK && j.allInitrds() && j.agentDHCP:
		return StageHandover, "fetched its kernel and initrd; its agent got a DHCP lease and has not called in (its console says why: no entropy for TLS yet, or the API unreachable)"
	case j.kernel != "" && j.kernelOK && j.allInitrds():
		return StageHandover, "fetched its kernel and initrd: the operating system has it now"
	case j.kernel != "" && j.kernelOK:
		return StageKernel, "got the kernel, never got its initrd in full" + failed
	case j.config && j.kernel != "":
		return StageConfig, "got its boot script, never got the kernel in full" + failed
	case j.config:
		return StageConfig, "got its boot script or config" + failed
	case j.loaderOK:
		return StageLoader, "got the loader, never asked for its config" + failed
	case j.loaderSeen:
		return StageOffer, "started fetching the loader, never got it in full" + failed
	case j.offered != "":
		return StageOffer, "got a boot offer (" + j.offered + "), never fetched the loader"
	case j.b.Stage >= StageDHCP:
		return StageDHCP, "asked DHCP, got no boot offer"
	}
	return StageNone, "no DHCP seen" + failed
}

func (j *judgement) allInitrds() bool {
	for _, ok := range j.initrds {
		if !ok {
			return false
		}
	}
	return true
}
