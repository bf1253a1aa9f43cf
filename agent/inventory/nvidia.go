package inventory

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"sync"
)

// nvidiaJSON is rackboot's table of NVIDIA data-centre GPUs: data, kept
// apart from the code that reads it, so a new card is one line.
//
//go:embed nvidia.json
var nvidiaJSON []byte

// gpuModel is what rackboot knows about a data-centre GPU that its
// device id alone cannot tell a driverless ramdisk: the memory (the BARs
// only bound it) and the MIG profiles.
type gpuModel struct {
	ID     string `json:"id"`
	Name   string `json:"name"`
	Family string `json:"family"`
	MemGiB int64  `json:"memory_gib"`
	// Layout names the card's MIG profiles in the table's mig_layouts.
	Layout string       `json:"mig"`
	MIG    []MIGProfile `json:"-"`
	// VGPU: NVIDIA vGPU supports the card. SRIOV: its vGPUs are SR-IOV
	// virtual functions (Ampere and later), which need the IOMMU.
	VGPU  bool `json:"vgpu"`
	SRIOV bool `json:"sriov"`
}

type nvidiaTable struct {
	Layouts    map[string][]MIGProfile `json:"mig_layouts"`
	GPUs       []gpuModel              `json:"gpus"`
	NVSwitches []struct {
		ID   string `json:"id"`
		Name string `json:"name"`
	} `json:"nvswitches"`
}

// nvidia is the parsed table, by device id; nvswitches names the NVSwitch
// bridges of HGX boards by device id.
type nvidia struct {
	models     map[string]gpuModel
	nvswitches map[string]string
}

var loadNVIDIA = sync.OnceValues(func() (nvidia, error) { return parseNVIDIA(nvidiaJSON) })

// parseNVIDIA reads the table and checks it: a duplicate id, an unknown
// layout or a profile whose name does not spell its size is an error.
func parseNVIDIA(b []byte) (nvidia, error) {
	var t nvidiaTable
	if err := json.Unmarshal(b, &t); err != nil {
		return nvidia{}, fmt.Errorf("gpu table: %w", err)
	}
	n := nvidia{models: map[string]gpuModel{}, nvswitches: map[string]string{}}
	for name, ps := range t.Layouts {
		for _, p := range ps {
			if _, _, err := profileSize(p.Name); err != nil || p.Max < 1 {
				return nvidia{}, fmt.Errorf("gpu table: layout %s: profile %q (max %d): %v", name, p.Name, p.Max, err)
			}
		}
	}
	for _, m := range t.GPUs {
		if _, dup := n.models[m.ID]; dup || m.ID == "" || m.Name == "" || m.MemGiB <= 0 {
			return nvidia{}, fmt.Errorf("gpu table: entry %+v: duplicate or incomplete", m)
		}
		if m.Layout != "" {
			ps, ok := t.Layouts[m.Layout]
			if !ok {
				return nvidia{}, fmt.Errorf("gpu table: %s (%s): no MIG layout %q", m.ID, m.Name, m.Layout)
			}
			m.MIG = ps
		}
		n.models[m.ID] = m
	}
	for _, s := range t.NVSwitches {
		n.nvswitches[s.ID] = s.Name
	}
	return n, nil
}

func nvidiaModel(id string) (gpuModel, bool) {
	n, err := loadNVIDIA()
	if err != nil {
		return gpuModel{}, false
	}
	m, ok := n.models[id]
	return m, ok
}

var profileRE = regexp.MustCompile(`^([1-7])g\.([0-9]+)gb$`)

// profileSize reads a MIG profile name, 3g.40gb: three of the card's seven
// compute slices and 40 GB of its memory.
func profileSize(name string) (slices, gb int, err error) {
	m := profileRE.FindStringSubmatch(name)
	if m == nil {
		return 0, 0, fmt.Errorf("MIG profile %q: want Ng.Mgb", name)
	}
	slices, _ = strconv.Atoi(m[1])
	gb, _ = strconv.Atoi(m[2])
	return slices, gb, nil
}

// CheckMIGLayout says whether layout (profile names, one per instance:
// ["3g.40gb", "3g.40gb"]) fits one card of g's model, and why not: every
// profile must be one the card has, no more of each than it holds, and
// together within the card's compute slices (its largest profile's, 7 or
// 4) and its eight memory slices (a profile's share of the card's memory,
// 3g.40gb of 80 GB is four).
func CheckMIGLayout(g GPU, layout []string) error {
	if !g.MIG.Capable {
		return fmt.Errorf("%s does not support MIG", modelOr(g))
	}
	if len(layout) == 0 {
		return fmt.Errorf("a MIG layout for %s needs at least one instance", modelOr(g))
	}
	most := map[string]int{}
	compute := 0
	for _, p := range g.MIG.Profiles {
		most[p.Name] = p.Max
		if s, _, err := profileSize(p.Name); err == nil && s > compute {
			compute = s
		}
	}
	cardGB := float64(g.Memory >> 30)
	count := map[string]int{}
	slices, mem := 0, 0
	for _, name := range layout {
		m, ok := most[name]
		if !ok {
			return fmt.Errorf("%s has no MIG profile %s (it has %s)", modelOr(g), name, profileNames(g.MIG.Profiles))
		}
		count[name]++
		if count[name] > m {
			return fmt.Errorf("%s holds at most %d instances of %s, not %d", modelOr(g), m, name, count[name])
		}
		s, gb, _ := profileSize(name)
		slices += s
		if cardGB > 0 {
			mem += max1(int(math.Round(float64(gb) * 8 / cardGB)))
		}
	}
	if slices > compute {
		return fmt.Errorf("the layout takes %d compute slices; %s has %d", slices, modelOr(g), compute)
	}
	if mem > 8 {
		return fmt.Errorf("the layout takes %d of the 8 memory slices of %s", mem, modelOr(g))
	}
	return nil
}

func max1(n int) int {
	if n < 1 {
		return 1
	}
	return n
}

func profileNames(ps []MIGProfile) string {
	s := ""
	for i, p := range ps {
		if i > 0 {
			s += ", "
		}
		s += fmt.Sprintf("%s×%d", p.Name, p.Max)
	}
	return s
}

// nvswitchesOf names the NVSwitches among a machine's PCI devices.
func nvswitchesOf(devs []PCIDevice) []NVSwitch {
	n, err := loadNVIDIA()
	if err != nil {
		return nil
	}
	var out []NVSwitch
	for _, d := range devs {
		if name, ok := n.nvswitches[d.DeviceID]; ok && d.VendorID == "10de" {
			out = append(out, NVSwitch{Address: d.Address, DeviceID: d.DeviceID, Name: name})
		}
	}
	return out
}

// NVIDIAModel is what rackboot's GPU table says of one NVIDIA card, for
// agents that configure a card the driver already runs (MIG, vGPU).
type NVIDIAModel struct {
	Name      string
	Family    string
	MemoryGiB int64
	// MIG holds the card's GPU instance profiles; none when the card has
	// no MIG.
	MIG []MIGProfile
	// VGPU: NVIDIA vGPU supports the card. SRIOV: its vGPUs live on
	// SR-IOV virtual functions, which must be enabled first.
	VGPU  bool
	SRIOV bool
}

// LookupNVIDIA finds an NVIDIA PCI device id (four hex digits: 20b0) in
// rackboot's GPU table.
func LookupNVIDIA(deviceID string) (NVIDIAModel, bool) {
	m, ok := nvidiaModel(deviceID)
	if !ok {
		return NVIDIAModel{}, false
	}
	return NVIDIAModel{Name: m.Name, Family: m.Family, MemoryGiB: m.MemGiB, MIG: m.MIG, VGPU: m.VGPU, SRIOV: m.SRIOV}, true
}

// GPU is the card as CheckMIGLayout sees it.
func (m NVIDIAModel) GPU(deviceID string) GPU {
	return GPU{VendorID: "10de", DeviceID: deviceID, Model: m.Name, Memory: m.MemoryGiB << 30, MIG: MIG{Capable: len(m.MIG) > 0, Profiles: m.MIG}}
}
