package gpuconf

import (
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// The query that lists the cards and their MIG mode. The mode is
// "Enabled" or "Disabled", "[N/A]" on a card without MIG; current and
// pending differ until a GPU reset makes a change effective.
var queryArgs = []string{"--query-gpu=index,pci.bus_id,mig.mode.current,mig.mode.pending", "--format=csv,noheader"}

// MIG modes as nvidia-smi prints them.
const (
	ModeEnabled  = "Enabled"
	ModeDisabled = "Disabled"
)

// smiGPU is one line of the card query.
type smiGPU struct {
	Index   int
	BusID   string
	Current string
	Pending string
}

func parseQuery(out []byte) ([]smiGPU, error) {
	var gpus []smiGPU
	for _, line := range strings.Split(string(out), "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		f := strings.Split(line, ",")
		if len(f) != 4 {
			return nil, fmt.Errorf("nvidia-smi query: line %q: want 4 fields", line)
		}
		for i := range f {
			f[i] = strings.TrimSpace(f[i])
		}
		n, err := strconv.Atoi(f[0])
		if err != nil || n < 0 {
			return nil, fmt.Errorf("nvidia-smi query: line %q: index %q", line, f[0])
		}
		gpus = append(gpus, smiGPU{Index: n, BusID: f[1], Current: f[2], Pending: f[3]})
	}
	return gpus, nil
}

// A row of a MIG table starts with the GPU index after the border; the
// header and the continuation rows (an -lgip profile's second line of
// engine counts) do not name a MIG profile, so the patterns skip them.
var (
	lgipRow = regexp.MustCompile(`^\|\s*(\d+)\s+MIG\s+(\S+)\s+(\d+)\s+(\d+)/(\d+)\s`)
	lgiRow  = regexp.MustCompile(`^\|\s*(\d+)\s+MIG\s+(\S+)\s+(\d+)\s+(\d+)\s+(\d+):(\d+)\s*\|\s*$`)
	lciRow  = regexp.MustCompile(`^\|\s*(\d+)\s+(\d+)\s+MIG\s+(\S+)\s+(\d+)\*?\s+(\d+)\s+(\d+):(\d+)\s*\|\s*$`)
	// A row that starts like an instance but does not parse is an
	// output format this package does not know: an error, never a
	// silently shorter list.
	migRowStart = regexp.MustCompile(`^\|\s*\d+\s+(\d+\s+)?MIG\s`)
)

// profile is a GPU instance profile a card offers (nvidia-smi mig -lgip).
type profile struct {
	GPU   int
	Name  string // 3g.20gb, 1g.5gb+me
	ID    int
	Free  int
	Total int
}

// parseProfiles reads `nvidia-smi mig -lgip`.
func parseProfiles(out []byte) ([]profile, error) {
	var ps []profile
	for _, line := range lines(out) {
		m := lgipRow.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		p := profile{GPU: atoi(m[1]), Name: m[2], ID: atoi(m[3]), Free: atoi(m[4]), Total: atoi(m[5])}
		if p.GPU < 0 || p.ID < 0 || p.Free < 0 || p.Total < 0 {
			return nil, fmt.Errorf("nvidia-smi mig -lgip: row %q: number out of range", line)
		}
		ps = append(ps, p)
	}
	return ps, nil
}

// instance is a GPU instance (nvidia-smi mig -lgi).
type instance struct {
	GPU       int
	Profile   string
	ProfileID int
	ID        int
	Start     int
	Size      int
}

// parseInstances reads `nvidia-smi mig -lgi`. A card in MIG mode with no
// instances makes nvidia-smi print "No GPU instances found" (and exit
// non-zero), which is an empty list.
func parseInstances(out []byte) ([]instance, error) {
	var is []instance
	for _, line := range lines(out) {
		m := lgiRow.FindStringSubmatch(line)
		if m == nil {
			if migRowStart.MatchString(line) {
				return nil, fmt.Errorf("nvidia-smi mig -lgi: row %q: unknown format", line)
			}
			continue
		}
		i := instance{GPU: atoi(m[1]), Profile: m[2], ProfileID: atoi(m[3]), ID: atoi(m[4]), Start: atoi(m[5]), Size: atoi(m[6])}
		if i.GPU < 0 || i.ProfileID < 0 || i.ID < 0 || i.Start < 0 || i.Size < 1 {
			return nil, fmt.Errorf("nvidia-smi mig -lgi: row %q: number out of range", line)
		}
		is = append(is, i)
	}
	return is, nil
}

// compute is a compute instance (nvidia-smi mig -lci).
type compute struct {
	GPU       int
	GI        int
	Profile   string
	ProfileID int
	ID        int
	Start     int
	Size      int
}

// parseComputes reads `nvidia-smi mig -lci`; "No compute instances
// found" is an empty list.
func parseComputes(out []byte) ([]compute, error) {
	var cs []compute
	for _, line := range lines(out) {
		m := lciRow.FindStringSubmatch(line)
		if m == nil {
			if migRowStart.MatchString(line) {
				return nil, fmt.Errorf("nvidia-smi mig -lci: row %q: unknown format", line)
			}
			continue
		}
		c := compute{GPU: atoi(m[1]), GI: atoi(m[2]), Profile: m[3], ProfileID: atoi(m[4]), ID: atoi(m[5]), Start: atoi(m[6]), Size: atoi(m[7])}
		if c.GPU < 0 || c.GI < 0 || c.ProfileID < 0 || c.ID < 0 || c.Start < 0 || c.Size < 1 {
			return nil, fmt.Errorf("nvidia-smi mig -lci: row %q: number out of range", line)
		}
		cs = append(cs, c)
	}
	return cs, nil
}

// listed is a card of `nvidia-smi -L` with its MIG devices.
type listed struct {
	Index int
	Name  string
	UUID  string
	MIG   []MIGDevice
}

// MIGDevice is a MIG device as `nvidia-smi -L` lists it: one per compute
// instance, numbered in the order of their GPU and compute instance ids.
type MIGDevice struct {
	Profile string `json:"profile"` // 3g.20gb
	Device  int    `json:"device"`
	UUID    string `json:"uuid"` // MIG-…
	// GPUInstance and ComputeInstance are known when the driver spells
	// them in the UUID (MIG-GPU-<uuid>/<gi>/<ci>, drivers before R470);
	// -1 otherwise.
	GPUInstance     int `json:"gpu_instance"`
	ComputeInstance int `json:"compute_instance"`
}

var (
	listGPU = regexp.MustCompile(`^GPU (\d+): (.*) \(UUID: (GPU-[0-9A-Za-z-]+)\)$`)
	listMIG = regexp.MustCompile(`^\s+MIG (\S+)\s+Device\s+(\d+): \(UUID: (MIG-[0-9A-Za-z/-]+)\)$`)
	oldMIG  = regexp.MustCompile(`^MIG-GPU-[0-9A-Za-z-]+/(\d+)/(\d+)$`)
)

// parseList reads `nvidia-smi -L`.
func parseList(out []byte) ([]listed, error) {
	var gs []listed
	for _, line := range lines(out) {
		if m := listGPU.FindStringSubmatch(line); m != nil {
			gs = append(gs, listed{Index: atoi(m[1]), Name: m[2], UUID: m[3]})
			continue
		}
		m := listMIG.FindStringSubmatch(line)
		if m == nil {
			if strings.Contains(line, "UUID: MIG-") {
				return nil, fmt.Errorf("nvidia-smi -L: line %q: unknown format", line)
			}
			continue
		}
		if len(gs) == 0 {
			return nil, fmt.Errorf("nvidia-smi -L: MIG device %q before any GPU", line)
		}
		d := MIGDevice{Profile: m[1], Device: atoi(m[2]), UUID: m[3], GPUInstance: -1, ComputeInstance: -1}
		if o := oldMIG.FindStringSubmatch(d.UUID); o != nil {
			d.GPUInstance, d.ComputeInstance = atoi(o[1]), atoi(o[2])
		}
		g := &gs[len(gs)-1]
		g.MIG = append(g.MIG, d)
	}
	for _, g := range gs {
		sort.Slice(g.MIG, func(i, j int) bool { return g.MIG[i].Device < g.MIG[j].Device })
	}
	return gs, nil
}

func lines(out []byte) []string {
	return strings.Split(strings.ReplaceAll(string(out), "\r\n", "\n"), "\n")
}

// atoi reads digits the patterns matched; a number too large for an int
// is -1, which the parsers refuse.
func atoi(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		return -1
	}
	return n
}
