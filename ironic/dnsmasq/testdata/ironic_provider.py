# Drives Ironic's own "dnsmasq" DHCP provider against the given
# directories: write (prepare a node), clean (tear it down), addresses
# (read the lease file back). Prints JSON.
import json
import sys
from unittest import mock

from ironic.conf import CONF

action, hostsdir, optsdir, leasefile, ipxe = sys.argv[1:6]
ipxe = ipxe == 'ipxe'
CONF([], project='ironic')
CONF.set_override('dhcp_provider', 'dnsmasq', group='dhcp')
CONF.set_override('dhcp_hostsdir', hostsdir, group='dnsmasq')
CONF.set_override('dhcp_optsdir', optsdir, group='dnsmasq')
CONF.set_override('dhcp_leasefile', leasefile, group='dnsmasq')
CONF.set_override('tftp_server', '192.0.2.10', group='pxe')
CONF.set_override('http_url', 'http://192.0.2.10:8080', group='deploy')

from ironic.common import dhcp_factory, pxe_utils
from ironic.drivers.modules import deploy_utils


class Node:
    uuid = '1be26c0b-03f2-4d2e-ae87-c02d7f33c123'

    def __init__(self, tag):
        self.driver_internal_info = {'dnsmasq_tag': tag} if tag else {}

    def set_driver_internal_info(self, key, value):
        self.driver_internal_info[key] = value

    def del_driver_internal_info(self, key):
        self.driver_internal_info.pop(key, None)

    def save(self):
        pass


class Port:
    def __init__(self, address, pxe_enabled):
        self.address = address
        self.pxe_enabled = pxe_enabled


task = mock.MagicMock()
task.node = Node(sys.argv[6] if len(sys.argv) > 6 else None)
task.ports = [Port('52:54:00:12:34:56', True), Port('52:54:00:12:34:57', False)]
task.driver.boot.ipxe_enabled = ipxe
provider = dhcp_factory.DHCPFactory()
out = {}
if action == 'write':
    with mock.patch.object(deploy_utils, 'get_ipxe_boot_file', return_value='snponly.efi'), \
            mock.patch.object(deploy_utils, 'get_pxe_boot_file', return_value='pxelinux.0'):
        opts = pxe_utils.dhcp_options_for_instance(task, ipxe_enabled=ipxe, ip_version=4)
        opts += pxe_utils.dhcp_options_for_instance(task, ipxe_enabled=ipxe, ip_version=6)
    provider.update_dhcp(task, opts)
    out['tag'] = task.node.driver_internal_info['dnsmasq_tag']
elif action == 'clean':
    provider.clean_dhcp(task)
elif action == 'addresses':
    out['addresses'] = provider.provider.get_ip_addresses(task)
print(json.dumps(out))
