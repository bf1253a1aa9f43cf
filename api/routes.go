package api

import (
	"fmt"
	"net/http"

	"github.com/rackboot/rackboot/agent/inventory"
	"github.com/rackboot/rackboot/agent/protocol"
	"github.com/rackboot/rackboot/lifecycle"
	"github.com/rackboot/rackboot/store"
)

// route is one API operation. The same table serves requests and writes
// the OpenAPI document, so the two cannot drift apart.
type route struct {
	method, pattern string
	// role is the least role allowed; "" needs no credentials.
	role    store.Role
	summary string
	// query lists the query parameters the route reads.
	query []string
	// in and out are the request and response body types (nil: none).
	in, out any
	status  int
	// audited routes write their own events (node actions, login).
	audited bool
	h       http.HandlerFunc
}

func (s *Server) table() []route {
	ro, tech, admin, agent := store.RoleReadonly, store.RoleTech, store.RoleAdmin, store.RoleAgent
	return []route{
		{method: "POST", pattern: "/api/v1/login", summary: "Log in to the web UI: sets the session cookie", in: Login{}, out: WhoAmI{}, status: 200, audited: true, h: s.login},
		{method: "POST", pattern: "/api/v1/logout", role: ro, summary: "End the web session", status: 204, audited: true, h: s.logout},
		{method: "GET", pattern: "/api/v1/whoami", role: ro, summary: "Who the caller is, with the CSRF token of a web session", out: WhoAmI{}, status: 200, h: s.whoami},
		{method: "GET", pattern: "/api/v1/version", role: ro, summary: "The server's version", out: Version{}, status: 200, h: s.version},
		{method: "GET", pattern: "/api/v1/openapi.json", summary: "This document", out: map[string]any{}, status: 200, h: s.openapi},

		{method: "GET", pattern: "/api/v1/nodes", role: ro, summary: "List nodes, filtered and paginated",
			query: []string{"state", "arch", "gpu", "rack", "tag", "q", "limit", "cursor"}, out: NodeList{}, status: 200, h: s.listNodes},
		{method: "POST", pattern: "/api/v1/nodes", role: tech, summary: "Add a node by its MAC before it boots (what enroll: known boots)", in: NewNode{}, out: Node{}, status: 201, h: s.createNode},
		{method: "GET", pattern: "/api/v1/nodes/{id}", role: ro, summary: "A node with its inventory (id, name or MAC)", out: Node{}, status: 200, h: s.getNode},
		{method: "PATCH", pattern: "/api/v1/nodes/{id}", role: tech, summary: "Set a node's name, rack place, tags, owner or Secure Boot path", in: NodePatch{}, out: Node{}, status: 200, h: s.patchNode},
		{method: "DELETE", pattern: "/api/v1/nodes/{id}", role: admin, summary: "Forget a node (its events stay in the audit log)", status: 204, h: s.deleteNode},
		{method: "POST", pattern: "/api/v1/nodes/{id}/handover", role: admin, summary: "Hand the node to OpenStack Ironic (created there with its ports, BMC and inventory; owner ironic) or take it back once Ironic has released it (deleted there; owner rackboot); 409 when either side is busy with it, 502 when Ironic does not answer",
			in: HandoverRequest{}, out: HandoverResult{}, status: 200, audited: true, h: s.handover},
		{method: "POST", pattern: "/api/v1/nodes/{id}/actions/{action}", role: tech, summary: "Act on a node: " + actionNames() + "; 409 when its state does not allow it",
			in: lifecycle.Params{}, out: ActionResult{}, status: 200, audited: true, h: s.action},
		{method: "GET", pattern: "/api/v1/nodes/{id}/bmc", role: ro, summary: "The node's BMC: URL, user, whether a password is set (never the password)", out: BMC{}, status: 200, h: s.getBMC},
		{method: "PUT", pattern: "/api/v1/nodes/{id}/bmc", role: tech, summary: "Set the node's BMC: ipmi://HOST[:PORT], redfish://HOST[/redfish/v1/Systems/ID] or redfish+http://...; the password is stored encrypted, and kept when absent",
			in: BMCSet{}, out: BMC{}, status: 200, h: s.putBMC},
		{method: "DELETE", pattern: "/api/v1/nodes/{id}/bmc", role: tech, summary: "Forget the node's BMC", status: 204, h: s.deleteBMC},
		{method: "GET", pattern: "/api/v1/nodes/{id}/power", role: ro, summary: "The node's power state, asked of its BMC", out: PowerStatus{}, status: 200, h: s.getPower},
		{method: "POST", pattern: "/api/v1/nodes/{id}/power", role: tech, summary: "Power the node on, off, soft-off (ACPI shutdown), cycle or reset through its BMC; 502 when the BMC fails",
			in: PowerRequest{}, out: PowerResult{}, status: 200, audited: true, h: s.postPower},
		{method: "PUT", pattern: "/api/v1/nodes/{id}/boot-device", role: tech, summary: "Force the node's next boot (or every boot, persistent) from pxe or disk through its BMC",
			in: BootDeviceRequest{}, out: PowerResult{}, status: 200, audited: true, h: s.putBootDevice},
		{method: "POST", pattern: "/api/v1/power", role: tech, summary: "Power many nodes (listed, or a rack's) on, off, soft-off, cycle or reset; power-ons queue through the server's limit (power.max_concurrent_on, power.on_rate); a result and an audit event per node",
			in: BulkPowerRequest{}, out: BulkPowerResults{}, status: 200, audited: true, h: s.bulkPower},
		{method: "GET", pattern: "/api/v1/nodes/{id}/inventory", role: ro, summary: "The node's inventory: rackboot's (format=rackboot, the default) or as ironic-python-agent sends it to Ironic's inspection (format=ironic)",
			query: []string{"format"}, out: inventory.Inventory{}, status: 200, h: s.getInventory},
		{method: "PUT", pattern: "/api/v1/nodes/{id}/inventory", role: admin, summary: "Set the inventory of a machine rackboot did not inspect (an existing hypervisor), as rackboot-agent inventory prints it on that machine",
			in: inventory.Inventory{}, status: 204, audited: true, h: s.putInventory},
		{method: "GET", pattern: "/api/v1/nodes/{id}/gpus", role: ro, summary: "The GPU figures (TFLOP/s, memory GB/s, temperature, SM clock, throttling) of the node's latest ended burn-in, each beside the median of the other cards of its model across the fleet, with a verdict: ok, below peers, too few peers, no figures or model unknown",
			out: NodeGPUs{}, status: 200, h: s.getNodeGPUs},
		{method: "GET", pattern: "/api/v1/nodes/{id}/trace", role: ro, summary: "The node's boot trace: boots with verdicts, and raw events", query: []string{"limit"}, out: Trace{}, status: 200, h: s.getTrace},

		{method: "GET", pattern: "/api/v1/gpus", role: ro, summary: "The GPUs of every node's latest ended burn-in, compared with their peers (the cards of their model across the fleet); below=true lists only the cards below their peers, model= one model",
			query: []string{"below", "model"}, out: GPUList{}, status: 200, h: s.listGPUs},

		{method: "GET", pattern: "/api/v1/hypervisors", role: ro, summary: "List hypervisors with what each holds and has free (vCPUs, memory, GPUs, vGPUs, MIG partitions), their VMs, and the fleet's totals",
			out: HypervisorList{}, status: 200, h: s.listHypervisors},
		{method: "GET", pattern: "/api/v1/hypervisors/{id}", role: ro, summary: "A hypervisor (its node's id, name or MAC) with its use and VMs", out: Hypervisor{}, status: 200, h: s.getHypervisor},
		{method: "PUT", pattern: "/api/v1/hypervisors/{id}", role: admin, summary: "Make an inspected node a hypervisor, or set one: libvirt URI, GPU mode (passthrough, vgpu TYPE, mig LAYOUT), overcommit, emulated architectures, bridge, pool, drain; its capabilities are read from libvirt",
			in: HypervisorSettings{}, out: Hypervisor{}, status: 200, audited: true, h: s.putHypervisor},
		{method: "PATCH", pattern: "/api/v1/hypervisors/{id}", role: admin, summary: "Change some of a hypervisor's settings (drain one: {\"drained\": true}; its VMs are listed to move)",
			in: HypervisorPatch{}, out: Hypervisor{}, status: 200, audited: true, h: s.patchHypervisor},
		{method: "POST", pattern: "/api/v1/hypervisors/{id}/agent-token", role: admin, summary: "Issue the hypervisor's agent token (rackboot-agent hypervisor), revoking the one it had, with the agent's configuration line and where its binary is; shown once",
			out: HypervisorAgentToken{}, status: 200, h: s.hypervisorAgentToken},
		{method: "DELETE", pattern: "/api/v1/hypervisors/{id}", role: admin, summary: "Stop using a node as a hypervisor; 409 while it has VMs", status: 204, audited: true, h: s.deleteHypervisor},
		{method: "GET", pattern: "/api/v1/flavors", role: ro, summary: "List flavors", out: FlavorList{}, status: 200, h: s.listFlavors},
		{method: "POST", pattern: "/api/v1/flavors", role: admin, summary: "Add a flavor: vCPUs, memory, disk, architecture and optionally a GPU (model, mode, profile, count)", in: Flavor{}, out: Flavor{}, status: 201, h: s.createFlavor},
		{method: "DELETE", pattern: "/api/v1/flavors/{name}", role: admin, summary: "Delete a flavor (VMs made from it keep their shape)", status: 204, h: s.deleteFlavor},
		{method: "GET", pattern: "/api/v1/vms", role: ro, summary: "List VMs", query: []string{"hypervisor"}, out: VMList{}, status: 200, h: s.listVMs},
		{method: "POST", pattern: "/api/v1/vms", role: tech, summary: "Create a VM from a flavor (or a shape) and an image: placed on a hypervisor, enrolled as a node of kind vm, its volume created and its domain defined and started; dry_run answers with the placement and the domain XML; 409 no_host explains a refusal",
			in: NewVM{}, out: VM{}, status: 201, audited: true, h: s.createVM},
		{method: "GET", pattern: "/api/v1/vms/{id}", role: ro, summary: "A VM with its libvirt state", out: VM{}, status: 200, h: s.getVM},
		{method: "DELETE", pattern: "/api/v1/vms/{id}", role: tech, summary: "Destroy and undefine a VM, delete its volume, free its allocation and forget its node", status: 204, audited: true, h: s.deleteVM},
		{method: "POST", pattern: "/api/v1/vms/{id}/actions/{action}", role: tech, summary: "Start, stop (ACPI shutdown), poweroff or reboot a VM", out: VM{}, status: 200, audited: true, h: s.vmAction},
		{method: "GET", pattern: "/api/v1/vms/{id}/console", role: tech, summary: "The VM's serial console, streamed as text", status: 200, h: s.vmConsole},

		{method: "GET", pattern: "/api/v1/events", role: ro, summary: "The audit log, oldest first; order=desc gives the newest first", query: []string{"node", "after", "before", "order", "limit"}, out: EventList{}, status: 200, h: s.listEvents},
		{method: "GET", pattern: "/api/v1/events/stream", role: ro, summary: "The audit log live, as server-sent events (event: event, id: seq)", query: []string{"node", "after"}, out: Event{}, status: 200, h: s.streamEvents},

		{method: "GET", pattern: "/api/v1/images", role: ro, summary: "List images", out: ImageList{}, status: 200, h: s.listImages},
		{method: "GET", pattern: "/api/v1/images/{name}", role: ro, summary: "An image", out: Image{}, status: 200, h: s.getImage},
		{method: "POST", pattern: "/api/v1/images", role: tech, summary: "Import an image: JSON {name, arch, url, sha256} downloads it; application/octet-stream with ?name=&arch=&sha256=&filename= uploads it",
			in: NewImage{}, out: Image{}, status: 201, h: s.createImage},
		{method: "DELETE", pattern: "/api/v1/images/{name}", role: admin, summary: "Delete an image and its file", status: 204, h: s.deleteImageFile},

		{method: "GET", pattern: "/api/v1/tasks", role: ro, summary: "List agent tasks", query: []string{"node", "state", "limit"}, out: TaskList{}, status: 200, h: s.listTasks},
		{method: "GET", pattern: "/api/v1/tasks/{tid}", role: ro, summary: "An agent task", out: Task{}, status: 200, h: s.getTask},

		{method: "GET", pattern: "/api/v1/tokens", role: admin, summary: "List API tokens (never their secrets)", out: TokenList{}, status: 200, h: s.listTokens},
		{method: "POST", pattern: "/api/v1/tokens", role: admin, summary: "Create an API token: the answer is the only time its secret is shown", in: NewToken{}, out: CreatedToken{}, status: 201, h: s.createToken},
		{method: "DELETE", pattern: "/api/v1/tokens/{tid}", role: admin, summary: "Revoke an API token", status: 204, h: s.deleteToken},

		{method: "GET", pattern: "/api/v1/users", role: admin, summary: "List web UI users", out: UserList{}, status: 200, h: s.listUsers},
		{method: "POST", pattern: "/api/v1/users", role: admin, summary: "Add a user, or set an existing user's role and password (ending their sessions)", in: NewUser{}, out: User{}, status: 201, h: s.putUser},
		{method: "DELETE", pattern: "/api/v1/users/{name}", role: admin, summary: "Delete a user and their tokens", status: 204, h: s.deleteUser},

		{method: "POST", pattern: "/api/v1" + protocol.LookupPath, summary: "Agent: look the node up by MAC and get its one-time agent token", in: protocol.Lookup{}, out: protocol.LookupResult{}, status: 200, audited: true, h: s.agentLookup},
		{method: "POST", pattern: "/api/v1" + fmt.Sprintf(protocol.InventoryPath, "{id}"), role: agent, summary: "Agent: post the node's inventory", in: map[string]any{}, status: 204, audited: true, h: s.agentInventory},
		{method: "POST", pattern: "/api/v1" + fmt.Sprintf(protocol.BMCPath, "{id}"), role: agent, summary: "Agent: the BMC user it enrolled when its inspect task asked (bmc.enroll); the password is stored encrypted and never shown",
			in: protocol.BMCEnrollment{}, status: 204, audited: true, h: s.agentBMC},
		{method: "POST", pattern: "/api/v1" + fmt.Sprintf(protocol.HeartbeatPath, "{id}"), role: agent, summary: "Agent: call in, and take the next task when idle", in: protocol.Heartbeat{}, out: protocol.HeartbeatResult{}, status: 200, audited: true, h: s.agentHeartbeat},
		{method: "POST", pattern: "/api/v1" + fmt.Sprintf(protocol.HypervisorPath, "{id}"), role: store.RoleHypervisor, summary: "Hypervisor agent: report what the GPUs carry (MIG instances, mdevs) and get the layout and the devices the hypervisor's VMs hold",
			in: protocol.HypervisorReport{}, out: protocol.HypervisorWork{}, status: 200, audited: true, h: s.agentHypervisor},
		{method: "POST", pattern: "/api/v1" + fmt.Sprintf(protocol.TaskPath, "{id}", "{tid}"), role: agent, summary: "Agent: report a task's end", in: protocol.TaskReport{}, out: protocol.HeartbeatResult{}, status: 200, audited: true, h: s.agentTask},
	}
}

func actionNames() string {
	var s string
	for i, a := range lifecycle.Actions {
		if i > 0 {
			s += ", "
		}
		s += string(a)
	}
	return s
}
