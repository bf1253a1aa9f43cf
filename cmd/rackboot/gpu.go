package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/url"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/rackboot/rackboot/api"
	"github.com/rackboot/rackboot/gpufleet"
)

func gpuCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "list" {
		return usageError{"gpu: want list"}
	}
	fs := flag.NewFlagSet("gpu list", flag.ContinueOnError)
	fs.SetOutput(stderr)
	c := clientFlags(fs)
	below := fs.Bool("below", false, "only the cards below their peers (the other cards of their model across the fleet)")
	model := fs.String("model", "", "only cards of this model (as the inventory names it: \"NVIDIA H100 80GB HBM3\")")
	pos, err := parseArgs(fs, args[1:])
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return usageError{"gpu list: no arguments, only flags"}
	}
	q := url.Values{}
	if *below {
		q.Set("below", "true")
	}
	if *model != "" {
		q.Set("model", *model)
	}
	var l api.GPUList
	if err := c.do(ctx, "GET", "/api/v1/gpus?"+q.Encode(), nil, &l); err != nil {
		return err
	}
	// By name, as an operator reads them; the API's order is the ids'.
	sort.SliceStable(l.Items, func(i, j int) bool {
		a, b := l.Items[i], l.Items[j]
		if na, nb := cmpOr(a.NodeName, a.Node), cmpOr(b.NodeName, b.Node); na != nb {
			return na < nb
		}
		return a.Index < b.Index
	})
	return c.print(stdout, l, func(tw *tabwriter.Writer) {
		fmt.Fprintln(tw, "NODE\tGPU\tMODEL\tTFLOP/S\tPEERS\tMEMORY GB/S\tPEERS\tVERDICT")
		for _, g := range l.Items {
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\n", orDash(cmpOr(g.NodeName, g.Node)), g.Index, orDash(g.Model),
				figure(g.TFLOPS.Value), peerFigure(g.TFLOPS), figure(g.MemoryGBps.Value), peerFigure(g.MemoryGBps), g.Verdict)
		}
		fmt.Fprintf(tw, "%d GPUs listed, of %d nodes' burn-ins; below: under %.0f%% of the median of at least %d other cards of the model\n",
			len(l.Items), l.Burnins, 100*l.Comparison.Threshold, l.Comparison.MinPeers)
	})
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func figure(v *float64) string {
	if v == nil {
		return "-"
	}
	return fmt.Sprintf("%.4g", *v)
}

// peerFigure is "median ×N (ratio%)", or the count alone where there are
// too few peers for a median.
func peerFigure(f gpufleet.Figure) string {
	if f.Value == nil {
		return "-"
	}
	if f.PeerMedian == 0 {
		return fmt.Sprintf("×%d", f.Peers)
	}
	s := fmt.Sprintf("%.4g ×%d (%.0f%%)", f.PeerMedian, f.Peers, 100*f.Ratio)
	if f.Below {
		s += " BELOW"
	}
	return s
}

// showGPUs is the GPU section of node show.
func showGPUs(tw *tabwriter.Writer, g api.NodeGPUs) {
	if g.Task == "" && len(g.Cards) == 0 {
		if g.Reason != "" {
			fmt.Fprintf(tw, "GPU burn-in:\t%s\n", g.Reason)
		}
		return
	}
	fmt.Fprintf(tw, "GPU burn-in:\t%s, %s (task %s, %s)\n", orDash(g.Outcome), orDash(g.Reason), g.Task, ts(g.Ended))
	for _, c := range g.Cards {
		fmt.Fprintf(tw, "GPU %d:\t%s: %s TFLOP/s (peers %s), %s GB/s (peers %s): %s\n", c.Index, orDash(c.Model),
			figure(c.TFLOPS.Value), peerFigure(c.TFLOPS), figure(c.MemoryGBps.Value), peerFigure(c.MemoryGBps), verdictLine(c))
	}
}

func verdictLine(c gpufleet.Card) string {
	if c.Verdict == gpufleet.OK || c.Verdict == "" {
		return c.Verdict
	}
	return strings.ToUpper(c.Verdict[:1]) + c.Verdict[1:] + ": " + c.Reason
}
