"""Feeds an inventory exported for Ironic (stdin, JSON) through
ironic-inspector's own processing hooks, as its /v1/continue would, and
prints what they made of it (stdout, JSON). An error in a hook is the
inspector refusing the data: this exits non-zero with its message.

Run with Debian's python3 (package python3-ironic-inspector).
"""
import json
import sys

from oslo_config import cfg

import ironic_inspector.conf  # noqa: F401 (registers the options)

CONF = cfg.CONF
CONF([], project="ironic-inspector")
# Count NVIDIA H100 and H200 cards the way a site's pci_devices.alias would.
CONF.set_override("alias", [
    '{"vendor_id": "10de", "product_id": "2330", "name": "h100"}',
    '{"vendor_id": "10de", "product_id": "2335", "name": "h200"}',
], group="pci_devices")

from ironic_inspector import utils  # noqa: E402
from ironic_inspector.plugins import pci_devices, standard  # noqa: E402


class Node:
    uuid = "0e2b1f1c-0000-4000-8000-000000000001"
    provision_state = "inspect wait"
    properties = {}
    driver_info = {}
    extra = {}


class NodeInfo:
    uuid = Node.uuid

    def __init__(self):
        self.properties = {}
        self.capabilities = {}
        self.created = []

    def node(self, ironic=None):
        return Node()

    def update_properties(self, ironic=None, **props):
        self.properties.update(props)

    def update_capabilities(self, ironic=None, **caps):
        self.capabilities.update(caps)

    def create_ports(self, ports, ironic=None):
        self.created.extend(ports)

    def ports(self, ironic=None):
        return {}

    def delete_port(self, port, ironic=None):
        pass

    def patch_port(self, port, patches, ironic=None):
        pass


def main():
    data = json.load(sys.stdin)
    node = NodeInfo()
    try:
        utils.get_inventory(data)
        interfaces = standard.ValidateInterfacesHook()
        interfaces.before_processing(data)
        interfaces.before_update(data, node)
        standard.RootDiskSelectionHook().before_update(data, node)
        standard.SchedulerHook().before_update(data, node)
        pci_devices.PciDevicesHook().before_update(data, node)
    except utils.Error as e:
        print("ironic-inspector refused the data: %s" % e, file=sys.stderr)
        return 1
    json.dump({
        "properties": node.properties,
        "capabilities": node.capabilities,
        "macs": data.get("macs"),
        "ipmi_address": data.get("ipmi_address"),
        "ports": [p.get("mac") if isinstance(p, dict) else p for p in node.created],
    }, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
