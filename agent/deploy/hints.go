package deploy

import (
	"fmt"
	"sort"
	"strings"
)

// Disk is a disk the agent may write to, as the inventory describes it.
type Disk struct {
	Name       string `json:"name"` // e.g. /dev/nvme0n1
	Size       int64  `json:"size"` // bytes
	Model      string `json:"model"`
	Vendor     string `json:"vendor"`
	Serial     string `json:"serial"`
	WWN        string `json:"wwn"`
	ByPath     string `json:"by_path"`
	Rotational bool   `json:"rotational"`
}

// Hints pick the disk to deploy to, as Ironic's root device hints do:
// every field given must match (strings case-insensitively; Name with or
// without /dev/). Size is exact, in GiB. MinSizeGiB picks the smallest
// disk of at least that many GiB among those left. No hints at all pick
// the smallest disk of at least 4 GiB, as Ironic does.
type Hints struct {
	Name       string `json:"name,omitempty"`
	Model      string `json:"model,omitempty"`
	Vendor     string `json:"vendor,omitempty"`
	Serial     string `json:"serial,omitempty"`
	WWN        string `json:"wwn,omitempty"`
	ByPath     string `json:"by_path,omitempty"`
	Size       int64  `json:"size,omitempty"`
	MinSizeGiB int64  `json:"min_size,omitempty"`
	Rotational *bool  `json:"rotational,omitempty"`
}

const gib = 1 << 30

func (h Hints) empty() bool { return h == Hints{} }

// String names the hints given, as an operator wrote them.
func (h Hints) String() string {
	if h.empty() {
		return "no hints: the smallest disk of at least 4 GiB"
	}
	var parts []string
	for _, f := range []struct{ k, v string }{{"name", h.Name}, {"model", h.Model}, {"vendor", h.Vendor},
		{"serial", h.Serial}, {"wwn", h.WWN}, {"by_path", h.ByPath}} {
		if f.v != "" {
			parts = append(parts, fmt.Sprintf("%s=%q", f.k, f.v))
		}
	}
	if h.Size > 0 {
		parts = append(parts, fmt.Sprintf("size=%d GiB", h.Size))
	}
	if h.MinSizeGiB > 0 {
		parts = append(parts, fmt.Sprintf("min_size=%d GiB", h.MinSizeGiB))
	}
	if h.Rotational != nil {
		parts = append(parts, fmt.Sprintf("rotational=%t", *h.Rotational))
	}
	return strings.Join(parts, " ")
}

func eq(hint, v string) bool {
	return hint == "" || strings.EqualFold(strings.TrimSpace(hint), strings.TrimSpace(v))
}

func (h Hints) match(d Disk) bool {
	name := strings.TrimPrefix(d.Name, "/dev/")
	return eq(strings.TrimPrefix(h.Name, "/dev/"), name) && eq(h.Model, d.Model) && eq(h.Vendor, d.Vendor) &&
		eq(h.Serial, d.Serial) && eq(h.WWN, d.WWN) && eq(h.ByPath, d.ByPath) &&
		(h.Size == 0 || d.Size/gib == h.Size) && (h.Rotational == nil || *h.Rotational == d.Rotational)
}

// Choose picks the disk the hints name, or says why none fits.
func Choose(disks []Disk, h Hints) (Disk, error) {
	if len(disks) == 0 {
		return Disk{}, fmt.Errorf("root device: the node has no disks")
	}
	min := h.MinSizeGiB
	if h.empty() {
		min = 4
	}
	var fit []Disk
	for _, d := range disks {
		if h.match(d) && d.Size >= min*gib {
			fit = append(fit, d)
		}
	}
	if len(fit) == 0 {
		var have []string
		for _, d := range disks {
			have = append(have, fmt.Sprintf("%s (%d GiB, %s, serial %s)", d.Name, d.Size/gib, d.Model, d.Serial))
		}
		return Disk{}, fmt.Errorf("root device: no disk matches %s; the node has %s", h, strings.Join(have, "; "))
	}
	sort.SliceStable(fit, func(i, j int) bool {
		if min > 0 && fit[i].Size != fit[j].Size {
			return fit[i].Size < fit[j].Size
		}
		return fit[i].Name < fit[j].Name
	})
	return fit[0], nil
}
