package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/rackboot/rackboot/agent/burnin"
	"github.com/rackboot/rackboot/agent/deploy"
	"github.com/rackboot/rackboot/agent/protocol"
	"github.com/rackboot/rackboot/agent/wipe"
	"golang.org/x/sys/unix"
)

// Work holds what the disk tasks need from the machine.
type Work struct {
	// Base is the boot port's base URL (rackboot.files): images and the
	// network test file are fetched from it.
	Base string
	// Disks lists the node's disks, from the inventory.
	Disks func() ([]deploy.Disk, error)
	// Arch names the agent ramdisk's directory (x86_64, aarch64), whose
	// initrd the network burn-in downloads.
	Arch string
	// GPUs counts the node's GPUs, from the inventory: a burn-in that
	// cannot test them is incomplete.
	GPUs func() int
	// Reboot restarts the node (unix.Reboot in the ramdisk).
	Reboot func() error
	// HTTP fetches from Base; it must trust the same certificates as the
	// API's client when Base is https.
	HTTP *http.Client
	// Token is the agent's current token, which image downloads show
	// when the deploy carries no image token.
	Token func() string
	// StallTimeout is how long an image download may receive nothing
	// before it is resumed on a new connection
	// (deploy.DefaultStallTimeout when zero).
	StallTimeout time.Duration
	// DiskTimeout is how long one write, the flush or one read of an
	// image write may be in the kernel before the disk counts as wedged
	// and the deploy fails (deploy.DefaultDiskTimeout when zero).
	DiskTimeout time.Duration
}

// Funcs are the task functions this Work provides.
func (w *Work) Funcs() map[string]TaskFunc {
	return map[string]TaskFunc{
		protocol.TaskDeploy: w.deploy,
		protocol.TaskWipe:   w.wipe,
		protocol.TaskBurnin: w.burnin,
		protocol.TaskReboot: w.reboot,
	}
}

// deployParams is what the server's deploy task carries.
type deployParams struct {
	Image     string        `json:"image"`
	Path      string        `json:"path"`
	Format    string        `json:"format"`
	SHA256    string        `json:"sha256"`
	RawSHA256 string        `json:"raw_sha256"`
	RawSize   int64         `json:"raw_size"`
	Hints     *deploy.Hints `json:"root_device,omitempty"`
	// Grow makes the last partition take the rest of the disk.
	Grow bool `json:"grow,omitempty"`
	// ImageToken reads the image file, and nothing else, for as long as
	// the deploy runs: unlike the agent's token it may cross the boot
	// port in clear.
	ImageToken string `json:"image_token,omitempty"`
	// CloudInit, when present, is written as a NoCloud seed.
	CloudInit *deploy.Seed `json:"cloud_init,omitempty"`
}

func (w *Work) deploy(ctx context.Context, t protocol.Task) (any, error) {
	var p deployParams
	if err := json.Unmarshal(t.Params, &p); err != nil {
		return nil, fmt.Errorf("deploy parameters: %w", err)
	}
	if p.Path == "" || p.SHA256 == "" {
		return nil, errors.New("deploy parameters: no image path or sha256")
	}
	disks, err := w.Disks()
	if err != nil {
		return nil, err
	}
	hints := deploy.Hints{}
	if p.Hints != nil {
		hints = *p.Hints
	}
	d, err := deploy.Choose(disks, hints)
	if err != nil {
		return nil, err
	}
	if p.RawSize > d.Size {
		return nil, fmt.Errorf("image %s (%d bytes) does not fit %s (%d bytes): %w", p.Image, p.RawSize, d.Name, d.Size, deploy.ErrTooLarge)
	}
	token := p.ImageToken
	if token == "" && w.Token != nil {
		token = w.Token()
	}
	res, err := deploy.Write(ctx, w.HTTP, deploy.Image{URL: strings.TrimRight(w.Base, "/") + p.Path, Token: token, Format: p.Format, SHA256: p.SHA256,
		RawSHA256: p.RawSHA256, RawSize: p.RawSize, StallTimeout: w.StallTimeout, DiskTimeout: w.DiskTimeout}, d.Name, func(pr deploy.Progress) {
		ReportProgress(ctx, protocol.Progress{Phase: "writing " + d.Name, Done: pr.Written, Total: max(pr.Total, 0), Rate: pr.Rate})
	})
	if err != nil {
		return res, err
	}
	f, err := os.OpenFile(d.Name, os.O_RDWR, 0)
	if err != nil {
		return res, fmt.Errorf("after the image: %w", err)
	}
	defer f.Close()
	sector := sectorSize(f)
	if !p.Grow && p.CloudInit == nil {
		// Even unchanged, the table belongs at the disk's end.
		if _, err := deploy.RelocateBackup(f, sector); err != nil && !errors.Is(err, deploy.ErrNoGPT) {
			return res, err
		}
	} else {
		if p.CloudInit != nil {
			if p.CloudInit.InstanceID == "" {
				p.CloudInit.InstanceID = t.ID
			}
			err = deploy.WriteSeed(f, sector, *p.CloudInit, p.Grow)
		} else {
			_, err = deploy.GrowLast(f, sector)
		}
		if err != nil {
			return res, err
		}
	}
	return res, nil
}

// sectorSize is the disk's logical sector size, in which its GPT counts:
// 4096 on 4Kn drives, 512 elsewhere and for image files.
func sectorSize(f *os.File) int64 {
	if n, err := unix.IoctlGetInt(int(f.Fd()), unix.BLKSSZGET); err == nil && (n == 512 || n == 4096) {
		return int64(n)
	}
	return 512
}

type wipeParams struct {
	Method string `json:"method"`
}

func (w *Work) wipe(ctx context.Context, t protocol.Task) (any, error) {
	var p wipeParams
	if err := json.Unmarshal(t.Params, &p); err != nil {
		return nil, fmt.Errorf("wipe parameters: %w", err)
	}
	if p.Method == "" {
		p.Method = wipe.Quick
	}
	disks, err := w.Disks()
	if err != nil {
		return nil, err
	}
	var records []wipe.Record
	for _, d := range disks {
		start := time.Now()
		rec, err := wipe.Disk(ctx, d.Name, d.Serial, p.Method, func(done, total int64) {
			ReportProgress(ctx, protocol.Progress{Phase: p.Method + " wipe of " + d.Name, Done: done, Total: total,
				Rate: float64(done) / max(time.Since(start).Seconds(), 1e-3)})
		})
		records = append(records, rec)
		if err != nil {
			return map[string]any{"disks": records}, err
		}
	}
	return map[string]any{"disks": records}, nil
}

type burninParams struct {
	Duration string `json:"duration"`
}

func (w *Work) burnin(ctx context.Context, t protocol.Task) (any, error) {
	var p burninParams
	if err := json.Unmarshal(t.Params, &p); err != nil {
		return nil, fmt.Errorf("burn-in parameters: %w", err)
	}
	d, err := time.ParseDuration(p.Duration)
	if err != nil || d <= 0 {
		return nil, fmt.Errorf("burn-in duration %q: %v", p.Duration, err)
	}
	disks, err := w.Disks()
	if err != nil {
		return nil, err
	}
	var names []string
	for _, dk := range disks {
		names = append(names, dk.Name)
	}
	bp := burnin.Params{Duration: d, Disks: names}
	if w.GPUs != nil {
		bp.GPUs = w.GPUs()
	}
	if w.Arch != "" {
		bp.NetURL = strings.TrimRight(w.Base, "/") + "/artifacts/" + w.Arch + "/initrd"
	}
	return burnin.Run(ctx, bp)
}

func (w *Work) reboot(ctx context.Context, t protocol.Task) (any, error) {
	if w.Reboot == nil {
		return nil, errors.New("this agent cannot reboot the node")
	}
	// The report goes out first; the reboot follows a moment later.
	go func() {
		time.Sleep(2 * time.Second)
		w.Reboot()
	}()
	return map[string]string{"rebooting": "in 2s"}, nil
}
