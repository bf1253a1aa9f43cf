package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/rackboot/rackboot/api"
	"github.com/rackboot/rackboot/lifecycle"
	"github.com/rackboot/rackboot/power"
)

func nodeCmd(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usageError{"node: want list, add, show, inventory, trace, events, set, delete, power, boot-device, handover or an action (inspect, deploy, release, wipe, burnin, maintenance, reboot)"}
	}
	sub, args := args[0], args[1:]
	fs := flag.NewFlagSet("node "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	c := clientFlags(fs)
	var f struct {
		state, arch, gpu, rack, tag, q                        string
		name, setRack, tags, owner, secureBoot, image, method string
		duration, reason, format                              string
		bmc, bmcUser, bmcPasswordFile, bmcFingerprint         string
		noBMC, persistent                                     bool
		hostname, sshKeys, rootSerial, role, conductorGroup   string
		rootMin                                               int64
		grow                                                  bool
		position                                              int
	}
	set := map[string]bool{}
	switch sub {
	case "inventory":
		fs.StringVar(&f.format, "format", "rackboot", "rackboot, or ironic: as ironic-python-agent sends it to Ironic's inspection")
		fs.StringVar(&f.image, "set", "", "set the inventory of a machine rackboot did not inspect from this file (rackboot-agent inventory's output on it; admin)")
	case "list":
		fs.StringVar(&f.state, "state", "", "only nodes in this state")
		fs.StringVar(&f.arch, "arch", "", "only x86_64 or aarch64 nodes")
		fs.StringVar(&f.gpu, "gpu", "", "only nodes with a GPU whose model contains this")
		fs.StringVar(&f.rack, "rack", "", "only nodes in this rack")
		fs.StringVar(&f.tag, "tag", "", "only nodes with this tag")
		fs.StringVar(&f.q, "q", "", "search id, name, MAC, rack, tags and GPU models")
	case "add":
		fs.StringVar(&f.arch, "arch", "", "x86_64 or aarch64, if known (its first boot says it)")
		fs.StringVar(&f.name, "name", "", "the node's name (with one MAC)")
	case "set":
		fs.StringVar(&f.name, "name", "", "the node's name")
		fs.StringVar(&f.setRack, "rack", "", "the rack it is in")
		fs.IntVar(&f.position, "position", 0, "its rack unit")
		fs.StringVar(&f.tags, "tags", "", "comma-separated tags (replaces them all)")
		fs.StringVar(&f.owner, "owner", "", "rackboot or ironic")
		fs.StringVar(&f.secureBoot, "secure-boot", "", "on, off or inherit (the subnet's setting)")
		fs.StringVar(&f.bmc, "bmc", "", "the node's BMC: ipmi://HOST[:623], redfish://HOST[/redfish/v1/Systems/ID] (https) or redfish+http://HOST (labs)")
		fs.StringVar(&f.bmcUser, "bmc-user", "", "the BMC user (with --bmc)")
		fs.StringVar(&f.bmcPasswordFile, "bmc-password-file", "", "read the BMC password from this file, or - for the first line of stdin (never on the command line; absent keeps the one set)")
		fs.StringVar(&f.bmcFingerprint, "bmc-fingerprint", "", "pin a redfish:// BMC's certificate: its SHA-256, hex (default: verify it with serve --bmc-ca-file or the system's CAs)")
		fs.BoolVar(&f.noBMC, "no-bmc", false, "forget the node's BMC")
	case "handover":
		fs.StringVar(&f.conductorGroup, "conductor-group", "", "with --to ironic: the Ironic conductor group to drive it (default: the server's ironic.conductor_group)")
		fs.StringVar(&f.owner, "to", "", "ironic: create the node in Ironic (ironic.api_url) with its ports, BMC and inventory, and make it Ironic's; rackboot: take it back once Ironic has released it (deleted there)")
	case "power":
		fs.StringVar(&f.rack, "rack", "", "act on every node of this rack (then give only the action)")
	case "boot-device":
		fs.BoolVar(&f.persistent, "persistent", false, "for every boot, not only the next one")
	case "deploy":
		fs.StringVar(&f.image, "image", "", "the image to write (required)")
		fs.StringVar(&f.hostname, "hostname", "", "write a cloud-init seed with this hostname")
		fs.StringVar(&f.sshKeys, "ssh-keys", "", "authorized_keys file for the seed")
		fs.StringVar(&f.role, "role", "", "hypervisor: the seed also carries libvirt's TLS files from rackboot's CA and enables libvirtd's TLS socket (the image needs libvirt-daemon-system); then rackboot hypervisor add NODE --uri qemu+tls://HOST/system")
		fs.StringVar(&f.rootSerial, "root-serial", "", "write to the disk with this serial")
		fs.Int64Var(&f.rootMin, "root-min-size", 0, "write to the smallest disk of at least this many GiB")
		fs.BoolVar(&f.grow, "grow", false, "grow the image's last partition to the end of the disk")
	case "wipe", "release":
		fs.StringVar(&f.method, "method", "quick", "quick (signatures and partition tables) or full (every block)")
	case "burnin":
		fs.StringVar(&f.duration, "duration", "30m", "how long to run")
	}
	if lifecycle.Action(sub) == lifecycle.Maintenance || isAction(sub) {
		fs.StringVar(&f.reason, "reason", "", "why, for the audit log")
	}
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	fs.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
	ref := ""
	if len(pos) > 0 {
		ref = pos[0]
	}
	if sub != "list" && ref == "" {
		return usageError{"node " + sub + ": which node? (id, name or MAC)"}
	}
	path := "/api/v1/nodes/" + url.PathEscape(ref)
	switch sub {
	case "add":
		if f.name != "" && len(pos) > 1 {
			return usageError{"node add: --name names one node: give one MAC"}
		}
		var added []api.Node
		for _, mac := range pos {
			var n api.Node
			if err := c.do(ctx, "POST", "/api/v1/nodes", api.NewNode{MAC: mac, Arch: f.arch, Name: f.name}, &n); err != nil {
				return fmt.Errorf("node add %s: %w", mac, err)
			}
			added = append(added, n)
		}
		return c.print(stdout, added, func(tw *tabwriter.Writer) {
			fmt.Fprintln(tw, "ID\tNAME\tSTATE\tMACS")
			for _, n := range added {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", n.ID, orDash(n.Name), n.State, strings.Join(n.MACs, ","))
			}
		})
	case "list":
		q := url.Values{}
		for k, v := range map[string]string{"state": f.state, "arch": f.arch, "gpu": f.gpu, "rack": f.rack, "tag": f.tag, "q": f.q} {
			if v != "" {
				q.Set(k, v)
			}
		}
		var all []api.Node
		for {
			var page api.NodeList
			if err := c.do(ctx, "GET", "/api/v1/nodes?"+q.Encode(), nil, &page); err != nil {
				return err
			}
			all = append(all, page.Items...)
			if page.NextCursor == "" {
				break
			}
			q.Set("cursor", page.NextCursor)
		}
		if all == nil {
			all = []api.Node{}
		}
		return c.print(stdout, all, func(tw *tabwriter.Writer) {
			fmt.Fprintln(tw, "ID\tNAME\tSTATE\tARCH\tRACK\tGPUS\tMACS\tLAST SEEN")
			for _, n := range all {
				place := orDash(n.Rack)
				if n.Position > 0 {
					place += fmt.Sprintf(" U%d", n.Position)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", n.ID, orDash(n.Name), n.State, orDash(n.Arch), place,
					orDash(strings.Join(n.GPUModels, ",")), strings.Join(n.MACs, ","), ts(n.LastSeen))
			}
		})
	case "handover":
		if f.owner != "ironic" && f.owner != "rackboot" {
			return usageError{"node handover: --to ironic or --to rackboot"}
		}
		var res api.HandoverResult
		if err := c.do(ctx, "POST", path+"/handover", api.HandoverRequest{To: f.owner, ConductorGroup: f.conductorGroup}, &res); err != nil {
			return err
		}
		return c.print(stdout, res, func(tw *tabwriter.Writer) {
			fmt.Fprintln(tw, "ID\tNAME\tOWNER\tIRONIC NODE\tIRONIC STATE")
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", res.Node.ID, orDash(res.Node.Name), res.Node.Owner, orDash(res.IronicUUID), orDash(res.IronicState))
		})
	case "show":
		var n api.Node
		if err := c.do(ctx, "GET", path, nil, &n); err != nil {
			return err
		}
		if c.output == "json" {
			return c.print(stdout, n, nil)
		}
		var g api.NodeGPUs
		if len(n.GPUModels) > 0 {
			// A server older than the GPU comparison answers 404: the
			// node is still shown, without its GPU figures.
			var ae *apiError
			if err := c.do(ctx, "GET", path+"/gpus", nil, &g); err != nil && !(errors.As(err, &ae) && ae.Status == http.StatusNotFound) {
				return err
			}
		}
		return c.print(stdout, n, func(tw *tabwriter.Writer) { showNode(tw, n); showGPUs(tw, g) })
	case "inventory":
		if f.image != "" {
			b, err := os.ReadFile(f.image)
			if err != nil {
				return fmt.Errorf("node inventory --set: %w", err)
			}
			return c.send(ctx, "PUT", path+"/inventory", "application/json", bytes.NewReader(b), nil)
		}
		var inv json.RawMessage
		if err := c.do(ctx, "GET", path+"/inventory?format="+url.QueryEscape(f.format), nil, &inv); err != nil {
			return err
		}
		var out bytes.Buffer
		if err := json.Indent(&out, inv, "", "  "); err != nil {
			return err
		}
		out.WriteByte('\n')
		_, err := stdout.Write(out.Bytes())
		return err
	case "trace":
		var tr api.Trace
		if err := c.do(ctx, "GET", path+"/trace", nil, &tr); err != nil {
			return err
		}
		return c.print(stdout, tr, func(tw *tabwriter.Writer) { showTrace(tw, tr) })
	case "events":
		var evs api.EventList
		if err := c.do(ctx, "GET", "/api/v1/events?limit=1000&node="+url.QueryEscape(ref), nil, &evs); err != nil {
			return err
		}
		return c.print(stdout, evs.Items, func(tw *tabwriter.Writer) { showEvents(tw, evs.Items) })
	case "set":
		var p api.NodePatch
		if set["name"] {
			p.Name = &f.name
		}
		if set["rack"] {
			p.Rack = &f.setRack
		}
		if set["position"] {
			p.Position = &f.position
		}
		if set["tags"] {
			tags := []string{}
			for _, t := range strings.Split(f.tags, ",") {
				if t = strings.TrimSpace(t); t != "" {
					tags = append(tags, t)
				}
			}
			p.Tags = &tags
		}
		if set["owner"] {
			p.Owner = &f.owner
		}
		if set["secure-boot"] {
			p.SecureBoot = &f.secureBoot
		}
		bmcSet := set["bmc"] || set["bmc-user"] || set["bmc-password-file"] || set["bmc-fingerprint"]
		nodeSet := set["name"] || set["rack"] || set["position"] || set["tags"] || set["owner"] || set["secure-boot"]
		if !bmcSet && !nodeSet && !set["no-bmc"] {
			return usageError{"node set: nothing to set (--name, --rack, --position, --tags, --owner, --secure-boot, --bmc, --no-bmc)"}
		}
		if set["no-bmc"] && bmcSet {
			return usageError{"node set: --no-bmc with --bmc flags: which is it?"}
		}
		if bmcSet && !set["bmc"] {
			return usageError{"node set: --bmc-user, --bmc-password-file and --bmc-fingerprint go with --bmc URL"}
		}
		var n api.Node
		if nodeSet {
			if err := c.do(ctx, "PATCH", path, p, &n); err != nil {
				return err
			}
		} else if err := c.do(ctx, "GET", path, nil, &n); err != nil {
			return err
		}
		if set["no-bmc"] {
			if err := c.do(ctx, "DELETE", path+"/bmc", nil, nil); err != nil {
				return err
			}
		}
		var b *api.BMC
		if bmcSet {
			in := api.BMCSet{URL: f.bmc, User: f.bmcUser, Fingerprint: f.bmcFingerprint}
			if set["bmc-password-file"] {
				pw, err := readSecret(f.bmcPasswordFile, stdin, stderr, "BMC password for "+ref)
				if err != nil {
					return fmt.Errorf("node set: %w", err)
				}
				in.Password = &pw
			}
			b = &api.BMC{}
			if err := c.do(ctx, "PUT", path+"/bmc", in, b); err != nil {
				return err
			}
		}
		out := struct {
			api.Node
			BMC *api.BMC `json:"bmc,omitempty"`
		}{n, b}
		return c.print(stdout, out, func(tw *tabwriter.Writer) {
			showNode(tw, n)
			if b != nil {
				showBMC(tw, *b)
			}
		})
	case "power":
		if f.rack != "" || len(pos) > 2 {
			return bulkPower(ctx, c, stdout, f.rack, pos)
		}
		if len(pos) != 2 {
			return usageError{powerUsage}
		}
		if pos[1] == "status" {
			var st api.PowerStatus
			if err := c.do(ctx, "GET", path+"/power", nil, &st); err != nil {
				return err
			}
			return c.print(stdout, st, func(tw *tabwriter.Writer) { fmt.Fprintf(tw, "%s: power %s (%s)\n", st.Node, st.State, st.BMC) })
		}
		if _, err := power.ParseAction(pos[1]); err != nil {
			return usageError{"node power: " + err.Error() + " (or status)"}
		}
		var res api.PowerResult
		if err := c.do(ctx, "POST", path+"/power", api.PowerRequest{Action: pos[1]}, &res); err != nil {
			return err
		}
		return c.print(stdout, res, func(tw *tabwriter.Writer) {
			fmt.Fprintf(tw, "%s: %s: %s (%s)\n", res.Node, res.Event.Reason, res.Event.Message, res.BMC)
		})
	case "boot-device":
		if len(pos) != 2 {
			return usageError{"node boot-device NODE pxe|disk [--persistent]"}
		}
		if _, err := power.ParseDevice(pos[1]); err != nil {
			return usageError{"node boot-device: " + err.Error()}
		}
		var res api.PowerResult
		if err := c.do(ctx, "PUT", path+"/boot-device", api.BootDeviceRequest{Device: pos[1], Persistent: f.persistent}, &res); err != nil {
			return err
		}
		return c.print(stdout, res, func(tw *tabwriter.Writer) {
			fmt.Fprintf(tw, "%s: %s: %s (%s)\n", res.Node, res.Event.Reason, res.Event.Message, res.BMC)
		})
	case "delete":
		if err := c.do(ctx, "DELETE", path, nil, nil); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "deleted node %s\n", ref)
		return nil
	}
	if !isAction(sub) {
		return usageError{fmt.Sprintf("node: unknown command %q", sub)}
	}
	p := lifecycle.Params{Image: f.image, Duration: f.duration, Reason: f.reason}
	if set["method"] || sub == "wipe" || sub == "release" {
		p.Method = f.method
	}
	if sub == "deploy" && f.image == "" {
		return usageError{"node deploy: which image? (--image NAME)"}
	}
	if sub == "deploy" {
		p.Grow, p.Role = f.grow, f.role
		if f.rootSerial != "" || f.rootMin > 0 {
			p.RootDevice, _ = json.Marshal(map[string]any{"serial": f.rootSerial, "min_size": f.rootMin})
		}
		if f.hostname != "" {
			seed := map[string]any{"hostname": f.hostname}
			if f.sshKeys != "" {
				b, err := os.ReadFile(f.sshKeys)
				if err != nil {
					return fmt.Errorf("node deploy: %w", err)
				}
				var keys []string
				for _, l := range strings.Split(string(b), "\n") {
					if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
						keys = append(keys, l)
					}
				}
				seed["ssh_keys"] = keys
			}
			p.CloudInit, _ = json.Marshal(seed)
		}
	}
	if sub == "maintenance" {
		if len(pos) != 2 || (pos[1] != "on" && pos[1] != "off") {
			return usageError{"node maintenance NODE on|off [--reason TEXT]"}
		}
		on := pos[1] == "on"
		p.On = &on
	}
	var res api.ActionResult
	if err := c.do(ctx, "POST", path+"/actions/"+sub, p, &res); err != nil {
		return err
	}
	return c.print(stdout, res, func(tw *tabwriter.Writer) {
		fmt.Fprintf(tw, "%s: %s → %s\n", res.Node.ID, res.Event.From, res.Event.To)
	})
}

func isAction(s string) bool {
	for _, a := range lifecycle.Actions {
		if string(a) == s {
			return true
		}
	}
	return false
}

func showNode(tw *tabwriter.Writer, n api.Node) {
	sb := "inherit"
	if n.SecureBoot != nil {
		sb = map[bool]string{true: "on", false: "off"}[*n.SecureBoot]
	}
	place := orDash(n.Rack)
	if n.Position > 0 {
		place += fmt.Sprintf(", unit %d", n.Position)
	}
	for _, kv := range [][2]string{
		{"ID", n.ID}, {"Name", orDash(n.Name)}, {"State", n.State}, {"Since", ts(n.StateChanged)}, {"Last error", orDash(n.LastError)},
		{"Arch", orDash(n.Arch)}, {"Firmware", orDash(n.Firmware)}, {"Last client type", n.ClientArch}, {"Secure Boot path", sb},
		{"UUID", orDash(n.UUID)}, {"MACs", strings.Join(n.MACs, ", ")}, {"Rack", place}, {"Tags", orDash(strings.Join(n.Tags, ", "))},
		{"Owner", n.Owner}, {"GPUs", orDash(strings.Join(n.GPUModels, ", "))}, {"Actions", strings.Join(n.Actions, ", ")},
		{"First seen", ts(n.FirstSeen)}, {"Last seen", ts(n.LastSeen)},
	} {
		fmt.Fprintf(tw, "%s:\t%s\n", kv[0], kv[1])
	}
	if p := n.Power; p != nil {
		msg := p.State + ", asked " + ts(p.Checked) + ", since " + ts(p.Changed)
		if p.Error != "" {
			msg += ": " + p.Error
		}
		fmt.Fprintf(tw, "Power:\t%s\n", msg)
	}
}

func showBMC(tw *tabwriter.Writer, b api.BMC) {
	pw := "not set"
	if b.PasswordSet {
		pw = "set (never shown)"
	}
	fmt.Fprintf(tw, "BMC:\t%s\nBMC user:\t%s\nBMC password:\t%s\n", b.URL, orDash(b.User), pw)
	if b.Fingerprint != "" {
		fmt.Fprintf(tw, "BMC certificate:\t%s\n", b.Fingerprint)
	}
}

// readSecret reads a secret from a file, or with "-" the first line of
// stdin (prompting on stderr): secrets never go on a command line, where
// ps and shell histories see them.
func readSecret(file string, stdin io.Reader, stderr io.Writer, what string) (string, error) {
	if file == "-" {
		fmt.Fprintf(stderr, "%s: ", what)
		line, err := bufio.NewReader(stdin).ReadString('\n')
		if err != nil && line == "" {
			return "", fmt.Errorf("reading the %s from stdin: %w", what, err)
		}
		fmt.Fprintln(stderr)
		return strings.TrimRight(line, "\r\n"), nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", err
	}
	pw, _, _ := strings.Cut(string(b), "\n")
	return strings.TrimRight(pw, "\r"), nil
}

func showEvents(tw *tabwriter.Writer, evs []api.Event) {
	fmt.Fprintln(tw, "SEQ\tTIME\tACTOR\tKIND\tCHANGE\tREASON / MESSAGE")
	for _, e := range evs {
		change := "-"
		if e.From != "" || e.To != "" {
			change = e.From + " → " + e.To
		}
		msg := e.Reason
		if e.Message != "" {
			msg = strings.TrimSpace(e.Message + " " + e.Reason)
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", e.Seq, ts(e.Time), e.Actor, e.Kind, change, orDash(msg))
	}
}

func showTrace(tw *tabwriter.Writer, tr api.Trace) {
	if len(tr.Boots) == 0 {
		fmt.Fprintf(tw, "node %s has no recorded boots\n", tr.Node)
		return
	}
	for i, b := range tr.Boots {
		fmt.Fprintf(tw, "boot %d at %s\t%s\n", i+1, b.Start.Format(time.RFC3339), b.Client)
		for _, s := range b.Steps {
			mark := "ok"
			if !s.OK {
				mark = "FAIL"
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", s.Time.Format("15:04:05.000"), mark, s.Proto, s.What, s.Detail)
		}
		fmt.Fprintf(tw, "  => %s\n\n", b.Verdict)
	}
}

const powerUsage = "node power NODE on|off|soft-off|cycle|reset|status, node power NODE... ACTION, or node power --rack RACK ACTION"

// bulkPower acts on many nodes at once through POST /api/v1/power: the
// server queues power-ons through its limit and answers per node, so the
// call lasts as long as the queue (no client timeout; Ctrl-C stops the
// nodes not started yet).
func bulkPower(ctx context.Context, c *client, stdout io.Writer, rack string, pos []string) error {
	if len(pos) == 0 || (rack == "") == (len(pos) == 1) {
		return usageError{powerUsage}
	}
	action := pos[len(pos)-1]
	if _, err := power.ParseAction(action); err != nil {
		return usageError{"node power: " + err.Error()}
	}
	in := api.BulkPowerRequest{Action: action, Rack: rack, Nodes: pos[:len(pos)-1]}
	c.http.Timeout = 0
	var res api.BulkPowerResults
	if err := c.do(ctx, "POST", "/api/v1/power", in, &res); err != nil {
		return err
	}
	failed := 0
	if err := c.print(stdout, res, func(tw *tabwriter.Writer) {
		fmt.Fprintln(tw, "NODE\tRESULT")
		for _, r := range res.Items {
			msg := "done"
			if !r.OK {
				msg, failed = "failed: "+r.Error, failed+1
			}
			fmt.Fprintf(tw, "%s\t%s\n", r.Node, msg)
		}
	}); err != nil {
		return err
	}
	if failed > 0 {
		return fmt.Errorf("node power %s: %d of %d nodes failed", action, failed, len(res.Items))
	}
	return nil
}
