package hypervisor

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"

	"github.com/rackboot/rackboot/agent/inventory"
	"github.com/rackboot/rackboot/store"
)

// inventories keeps what the hypervisors' inventories say, by node and
// revision. An inventory is most of a host's record and its parse most
// of a decision's time on a large fleet (a 1,000-host fleet took a
// quarter of a second a decision without it), and it changes only when
// the host is inspected again, which moves its revision. The zero value
// is ready.
type inventories struct {
	mu sync.Mutex
	m  map[string]parsedInventory
}

type parsedInventory struct {
	rev int64
	inv inventory.Inventory
	// err is why the inventory cannot be used: there is none, or it
	// does not parse.
	err error
}

// inventoryReader is what the cache reads from the store.
type inventoryReader interface {
	NodeInventories(ctx context.Context, ids []string) (map[string]store.NodeInventory, error)
}

// get returns the parsed inventory of each host, reading and parsing
// only those whose revision is not the one kept. Hosts no longer given
// are forgotten.
func (c *inventories) get(ctx context.Context, st inventoryReader, hosts []store.FleetHost) (map[string]parsedInventory, error) {
	out := make(map[string]parsedInventory, len(hosts))
	var stale []string
	c.mu.Lock()
	for _, h := range hosts {
		id := h.Node.ID
		if p, ok := c.m[id]; ok && p.rev == h.Node.InventoryRev {
			out[id] = p
		} else {
			stale = append(stale, id)
		}
	}
	c.mu.Unlock()
	if len(stale) > 0 {
		got, err := st.NodeInventories(ctx, stale)
		if err != nil {
			return nil, err
		}
		for _, id := range stale {
			// A node deleted since the fleet was read is no host now;
			// read as one without an inventory, it takes nothing.
			out[id] = parse(id, got[id])
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]parsedInventory{}
	}
	keep := make(map[string]bool, len(hosts))
	for _, h := range hosts {
		keep[h.Node.ID] = true
	}
	for id := range c.m {
		if !keep[id] {
			delete(c.m, id)
		}
	}
	for id, p := range out {
		// Another decision may have read a newer one meanwhile.
		if old, ok := c.m[id]; !ok || old.rev <= p.rev {
			c.m[id] = p
		}
	}
	return out, nil
}

func parse(id string, ni store.NodeInventory) parsedInventory {
	p := parsedInventory{rev: ni.Rev}
	if len(ni.Inventory) == 0 {
		p.err = fmt.Errorf("node has no inventory: inspect it first")
	} else if err := json.Unmarshal(ni.Inventory, &p.inv); err != nil {
		p.err = fmt.Errorf("inventory: %w", err)
	}
	return p
}
