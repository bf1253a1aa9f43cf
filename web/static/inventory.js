// Renders a node's inventory (agent/inventory's JSON, IPA-style names).
// Every field may be missing or of another shape than expected: nothing
// here may throw on what an agent sent.

import { h, bytes, chip, mono } from './dom.js';

function get1(o, path) {
  return path.split('.').reduce((a, p) => (a && typeof a === 'object' ? a[p] : undefined), o);
}

// pick returns the first of keys (dotted paths) with a value.
export function pick(o, ...keys) {
  if (!o || typeof o !== 'object') return undefined;
  for (const k of keys) {
    const v = get1(o, k);
    if (v !== undefined && v !== null && v !== '') return v;
  }
  return undefined;
}

const arr = (v) => (Array.isArray(v) ? v : []);

function txt(v) {
  if (v === undefined || v === null || v === '') return '—';
  if (typeof v === 'boolean') return v ? 'yes' : 'no';
  if (Array.isArray(v)) return v.length ? v.map(txt).join(', ') : '—';
  if (typeof v === 'object') return JSON.stringify(v);
  return String(v);
}

function cell(v, cls) {
  const t = txt(v);
  return h('td', { class: [cls, t === '—' && 'muted'], text: t });
}

// memText reads a memory size given as bytes, or with a unit in its key.
function memText(o, byteKeys, mbKeys = [], gbKeys = []) {
  const b = pick(o, ...byteKeys);
  if (typeof b === 'number') return bytes(b);
  if (typeof b === 'string' && b) return b;
  const mb = pick(o, ...mbKeys);
  if (typeof mb === 'number') return bytes(mb * 1024 * 1024);
  const gb = pick(o, ...gbKeys);
  if (typeof gb === 'number') return bytes(gb * 1024 * 1024 * 1024);
  return '—';
}

function kv(rows) {
  const dl = h('dl', { class: 'kv' });
  for (const [k, v] of rows) {
    if (v === undefined) continue;
    dl.append(h('dt', { text: k }), h('dd', {}, v instanceof Node ? v : txt(v)));
  }
  return dl;
}

function table(cls, heads, rows) {
  return h('div', { class: 'table-wrap' }, h('table', { class: ['grid', 'grid-compact', cls] },
    h('thead', {}, h('tr', {}, heads.map((c) => h('th', { scope: 'col', text: c })))),
    h('tbody', {}, rows)));
}

function section(title, count, body) {
  return h('section', { class: 'inv-section' },
    h('h3', {}, title, count !== undefined ? h('span', { class: 'count', text: String(count) }) : null),
    body);
}

function numaText(v) {
  if (Array.isArray(v)) return String(v.length);
  return txt(v);
}

function cpuSection(cpu) {
  if (!cpu || typeof cpu !== 'object') return null;
  const flags = arr(cpu.flags);
  const notable = ['vmx', 'svm', 'avx2', 'avx512f', 'aes', 'sve', 'sve2', 'pdpe1gb', 'x2apic', 'hypervisor'].filter((f) => flags.includes(f));
  const threads = pick(cpu, 'threads', 'count');
  return section('CPU', undefined, kv([
    ['Model', pick(cpu, 'model_name', 'model')],
    ['Vendor', pick(cpu, 'vendor')],
    ['Architecture', pick(cpu, 'architecture')],
    ['Sockets', pick(cpu, 'sockets')],
    ['Cores', pick(cpu, 'cores')],
    ['Threads', threads],
    ['Frequency', (() => { const f = pick(cpu, 'frequency', 'max_mhz', 'mhz'); return typeof f === 'number' ? `${f} MHz` : f; })()],
    ['NUMA nodes', numaText(pick(cpu, 'numa_nodes', 'numa'))],
    ['Flags', flags.length ? h('span', { title: flags.join(' ') }, notable.map((f) => chip(f)), ` ${flags.length} in all`) : undefined],
  ]));
}

function memorySection(mem) {
  if (!mem || typeof mem !== 'object') return null;
  const dimms = arr(mem.dimms);
  return section('Memory', undefined, [
    kv([
      ['Usable', memText(mem, ['total', 'total_bytes'], ['total_mb'])],
      ['Installed', memText(mem, ['physical_bytes'], ['physical_mb'])],
      ['DIMMs', dimms.length ? String(dimms.length) : undefined],
    ]),
    dimms.length ? h('details', {}, h('summary', { text: `${dimms.length} DIMMs` }),
      table('dimms', ['Locator', 'Size', 'Type', 'Speed', 'Manufacturer', 'Part'], dimms.map((d) => h('tr', {},
        cell(pick(d, 'locator', 'slot', 'bank')), h('td', { text: memText(d, ['size', 'size_bytes'], ['size_mb']) }),
        cell(pick(d, 'type')), cell(pick(d, 'speed', 'speed_mts')), cell(pick(d, 'manufacturer')), cell(pick(d, 'part_number', 'part')))))) : null,
  ]);
}

function disksSection(disks) {
  if (!disks.length) return null;
  return section('Disks', disks.length, table('disks', ['Name', 'Size', 'Type', 'Model', 'Serial', 'WWN', 'By path'], disks.map((d) => {
    const rot = pick(d, 'rotational');
    const type = rot === true ? 'HDD' : rot === false ? (String(pick(d, 'name') || '').startsWith('nvme') ? 'NVMe' : 'SSD') : undefined;
    return h('tr', {},
      cell(pick(d, 'name'), 'mono'), h('td', { class: 'nowrap', text: memText(d, ['size', 'size_bytes']) }), cell(type),
      cell(pick(d, 'model')), cell(pick(d, 'serial'), 'mono'), cell(pick(d, 'wwn'), 'mono small break'), cell(pick(d, 'by_path'), 'mono small break'));
  })));
}

function nicsSection(nics) {
  if (!nics.length) return null;
  return section('Network interfaces', nics.length, table('nics', ['Name', 'MAC', 'Driver', 'Speed', 'Link', 'PCI'], nics.map((n) => {
    const carrier = pick(n, 'has_carrier', 'carrier', 'link');
    const speed = pick(n, 'speed_mbps', 'speed');
    return h('tr', {},
      cell(pick(n, 'name'), 'mono'), cell(pick(n, 'mac_address', 'mac'), 'mono'), cell(pick(n, 'driver')),
      cell(typeof speed === 'number' && speed > 0 ? (speed >= 1000 ? `${speed / 1000} Gb/s` : `${speed} Mb/s`) : undefined),
      h('td', {}, carrier === true ? chip('up', 'ok') : carrier === false ? chip('down', 'warn') : '—'),
      cell(pick(n, 'pci_address', 'pci'), 'mono'));
  })));
}

// verdictView shows a GPU's readiness for passthrough, vGPU and MIG,
// whatever shape the verdict has (booleans, {ready, reasons}, strings).
export function verdictView(v) {
  if (v === undefined || v === null) return h('span', { class: 'muted', text: '—' });
  if (typeof v === 'string') return chip(v);
  if (typeof v !== 'object') return chip(txt(v));
  if (Array.isArray(v)) return h('span', {}, v.map((x) => chip(txt(x))));
  const chips = [];
  const reasons = [];
  for (const [k, val] of Object.entries(v)) {
    if (k === 'reasons' || k === 'reason' || k === 'notes') {
      for (const r of arr(val).length ? arr(val) : [val]) if (r) reasons.push(txt(r));
      continue;
    }
    if (typeof val === 'boolean') {
      chips.push(chip(`${k} ${val ? '✓' : '✗'}`, val ? 'ok' : 'warn'));
    } else if (val && typeof val === 'object') {
      const ok = pick(val, 'ready', 'ok', 'capable', 'supported');
      const why = [...arr(val.reasons), ...(val.reason ? [val.reason] : [])].map(txt);
      chips.push(chip(`${k} ${ok === true ? '✓' : ok === false ? '✗' : ''}`.trim(), ok === true ? 'ok' : ok === false ? 'warn' : ''));
      for (const r of why) reasons.push(`${k}: ${r}`);
    } else if (val !== undefined && val !== null && val !== '') {
      chips.push(chip(`${k}: ${txt(val)}`));
    }
  }
  return h('div', { class: 'verdict' }, h('div', { class: 'chips' }, chips),
    reasons.length ? h('ul', { class: 'reasons' }, reasons.map((r) => h('li', { text: r }))) : null);
}

function iommuView(g) {
  const group = pick(g, 'iommu_group', 'iommu.group');
  const members = arr(pick(g, 'iommu_group_members', 'iommu_members', 'iommu.members', 'iommu_group_devices'));
  if (group === undefined && !members.length) return h('span', { class: 'muted', text: '—' });
  return h('span', { title: members.map(txt).join('\n') || null },
    h('span', { class: 'mono', text: txt(group) }),
    members.length ? h('span', { class: 'muted', text: ` (${members.length} device${members.length === 1 ? '' : 's'})` }) : null);
}

function sriovView(g) {
  const s = pick(g, 'sriov');
  const total = pick(g, 'sriov_totalvfs', 'sriov.total_vfs', 'sriov.totalvfs', 'sriov_total_vfs');
  const num = pick(g, 'sriov_numvfs', 'sriov.num_vfs', 'sriov.numvfs', 'sriov_num_vfs');
  if (total === undefined && num === undefined) return typeof s === 'boolean' ? txt(s) : '—';
  return `${num ?? 0} / ${total ?? '?'} VFs`;
}

function mdevView(g) {
  const types = arr(pick(g, 'mdev_types', 'vgpu_types', 'mdev.types'));
  if (!types.length) return h('span', { class: 'muted', text: '—' });
  const names = types.map((t) => (typeof t === 'object' ? pick(t, 'name', 'id', 'type') : t));
  return h('span', { title: names.map(txt).join('\n') }, `${types.length} type${types.length === 1 ? '' : 's'}`);
}

function migView(g) {
  const m = pick(g, 'mig');
  const capable = pick(g, 'mig_capable', 'mig.capable', 'mig.supported');
  const enabled = pick(g, 'mig_enabled', 'mig.enabled', 'mig.mode');
  const profiles = arr(pick(g, 'mig_profiles', 'mig.profiles'));
  if (capable === undefined && !profiles.length && (m === undefined || typeof m === 'object')) return h('span', { class: 'muted', text: '—' });
  if (typeof m === 'boolean' && capable === undefined) return m ? chip('capable', 'ok') : h('span', { class: 'muted', text: 'no' });
  if (capable === false) return h('span', { class: 'muted', text: 'no' });
  const names = profiles.map((p) => (typeof p === 'object' ? `${pick(p, 'name', 'profile')}${p.max ? ` ×${p.max}` : ''}` : p));
  return h('span', { title: names.map(txt).join('\n') || null },
    chip(enabled === true || enabled === 'enabled' ? 'enabled' : 'capable', 'ok'),
    profiles.length ? ` ${profiles.length} profiles` : null);
}

export function gpusOf(inv) {
  const g = arr(pick(inv, 'gpus')).length ? arr(inv.gpus) : arr(pick(inv, 'accelerators'));
  return g.filter((x) => x && typeof x === 'object');
}

function gpusSection(gpus) {
  if (!gpus.length) return null;
  return section('GPUs', gpus.length, table('gpus', ['PCI', 'Model', 'Memory', 'NUMA', 'IOMMU group', 'SR-IOV', 'vGPU', 'MIG', 'Verdict'], gpus.map((g) => h('tr', {},
    cell(pick(g, 'pci_address', 'address', 'pci'), 'mono'),
    h('td', {}, h('div', { text: txt(pick(g, 'model', 'model_name', 'name', 'product')) }),
      h('div', { class: 'sub mono', text: [pick(g, 'vendor_id', 'vendor'), pick(g, 'device_id', 'device')].filter((x) => x !== undefined).map(txt).join(':') })),
    h('td', { class: 'nowrap', text: memText(g, ['memory', 'memory_bytes', 'memory_total'], ['memory_mb', 'memory_mib'], ['memory_gb', 'memory_gib']) }),
    cell(pick(g, 'numa_node', 'numa')),
    h('td', {}, iommuView(g)),
    h('td', { text: sriovView(g) }),
    h('td', {}, mdevView(g)),
    h('td', {}, migView(g)),
    h('td', {}, verdictView(pick(g, 'verdict', 'verdicts', 'ready')))))));
}

function pciSection(devs) {
  if (!devs.length) return null;
  return h('details', { class: 'inv-section' }, h('summary', {}, 'PCI devices ', h('span', { class: 'count', text: String(devs.length) })),
    table('pci', ['Address', 'Vendor', 'Device', 'Class', 'Driver', 'NUMA', 'IOMMU'], devs.map((d) => h('tr', {},
      cell(pick(d, 'pci_address', 'address', 'slot'), 'mono'),
      cell(pick(d, 'vendor_name', 'vendor_id', 'vendor')),
      cell(pick(d, 'device_name', 'product_name', 'device_id', 'product_id', 'device')),
      cell(pick(d, 'class_name', 'class')),
      cell(pick(d, 'driver')), cell(pick(d, 'numa_node')), cell(pick(d, 'iommu_group'))))));
}

export function systemRows(inv) {
  const sv = pick(inv, 'system_vendor', 'system', 'dmi.system') || {};
  const sb = pick(inv, 'secure_boot', 'boot.secure_boot', 'firmware.secure_boot');
  return [
    ['Manufacturer', pick(sv, 'manufacturer', 'vendor')],
    ['Product', pick(sv, 'product_name', 'product')],
    ['Serial', pick(sv, 'serial_number', 'serial') !== undefined ? mono(txt(pick(sv, 'serial_number', 'serial'))) : undefined],
    ['Boot mode', pick(inv, 'boot.current_boot_mode', 'boot_mode', 'firmware.mode')],
    ['Secure Boot (agent)', sb === undefined ? undefined : typeof sb === 'object' ? txt(pick(sb, 'enabled', 'state')) : txt(sb)],
    ['BIOS', [pick(inv, 'bios.vendor', 'firmware.vendor'), pick(inv, 'bios.version', 'firmware.version')].filter(Boolean).join(' ') || undefined],
  ];
}

export function inventoryView(inv) {
  if (!inv || typeof inv !== 'object') {
    return h('p', { class: 'empty', text: 'No inventory yet: inspect the node to collect one.' });
  }
  const parts = [
    h('div', { class: 'inv-top' },
      section('System', undefined, kv(systemRows(inv))),
      cpuSection(pick(inv, 'cpu')),
      memorySection(pick(inv, 'memory'))),
    gpusSection(gpusOf(inv)),
    disksSection(arr(pick(inv, 'disks')).filter((x) => x && typeof x === 'object')),
    nicsSection(arr(pick(inv, 'interfaces', 'nics')).filter((x) => x && typeof x === 'object')),
    pciSection(arr(pick(inv, 'pci_devices', 'pci')).filter((x) => x && typeof x === 'object')),
    h('details', { class: 'inv-section raw' }, h('summary', { text: 'Raw inventory (JSON)' }),
      h('pre', { class: 'json', text: JSON.stringify(inv, null, 2) })),
  ];
  return h('div', { class: 'inventory' }, parts);
}
