// Hypervisors (what each holds and has free, drain), the VM list with
// the create form and its placement check, and a VM's page with its
// libvirt state and power actions.

import { h, clear, $, timeEl, fmtTime, stateBadge, chip, mono, field, select, card, empty, debounce, bytes } from './dom.js';
import { get, post, patch, del, enc, APIError } from './api.js';
import { can, toast, confirmDialog } from './ui.js';

// A host with nothing placed uses 0 B, which bytes() spells as unknown.
const mib = (n) => (n > 0 ? bytes(n * 1024 * 1024) : '0 B');

function errorBox(e) {
  return h('p', { class: 'alert alert-error', role: 'alert', text: e.message || String(e) });
}

function dash() {
  return h('span', { class: 'muted', text: '—' });
}

// gpuMode spells a hypervisor's GPU setting as an operator writes it.
function gpuMode(s) {
  if (!s.gpu_mode) return 'no GPUs for VMs';
  const mode = { mig: 'MIG', vgpu: 'vGPU', passthrough: 'passthrough' }[s.gpu_mode] || s.gpu_mode;
  return s.gpu_profile ? `${mode} ${s.gpu_profile}` : mode;
}

// meter shows one resource as used and free (the API's two counts;
// their sum is what the host offers after overcommit and its reserve).
function meter(key, label, used, free, fmt = String) {
  const total = used + free;
  return h('div', { class: 'meter', 'data-usage': key },
    h('div', { class: 'meter-head' }, h('span', { class: 'meter-label', text: label }),
      h('span', { class: 'meter-num', text: `${fmt(used)} used · ${fmt(free)} free of ${fmt(total)}` })),
    h('meter', { min: 0, max: Math.max(total, 1), value: used, low: total * 0.7, high: total * 0.9, optimum: 0, 'aria-label': `${label}: ${fmt(used)} of ${fmt(total)} used` }));
}

// meters are the resources worth showing: GPU rows only where there
// are GPUs of that kind to give.
function meters(u, mode) {
  if (!u) return [];
  const out = [meter('vcpus', 'vCPUs', u.vcpus, u.vcpus_free), meter('memory', 'Memory', u.memory_mib, u.memory_free_mib, mib)];
  if (u.gpus + u.gpus_free || mode === 'passthrough') out.push(meter('gpus', 'GPUs', u.gpus, u.gpus_free));
  if (u.partitions + u.partitions_free || mode === 'mig') out.push(meter('partitions', 'MIG partitions', u.partitions, u.partitions_free));
  if (u.vgpus + u.vgpus_free || mode === 'vgpu') out.push(meter('vgpus', 'vGPUs', u.vgpus, u.vgpus_free));
  return out;
}

function vmLinks(vms) {
  if (!vms || !vms.length) return h('p', { class: 'empty', text: 'No VMs.' });
  return h('ul', { class: 'vm-links' }, vms.map((v) => h('li', {}, h('a', { href: `#/vms/${enc(v.id)}`, 'data-vm': v.id, text: v.name || v.id }))));
}

// ---------------------------------------------------------------- hypervisors

// agentLine says what the hypervisor's agent last reported of its GPUs:
// the layout it applied, what each card carries, and what it could not
// do.
function agentLine(a) {
  if (!a) return h('p', { class: 'muted small hv-agent', text: 'GPU agent: never called in' });
  const gpus = (a.gpus && a.gpus.gpus) || [];
  const carried = gpus.map((g) => {
    const parts = [];
    if ((g.mig_instances || []).length) parts.push(`${g.mig_instances.length} MIG`);
    if ((g.mdevs || []).length) parts.push(`${g.mdevs.length} vGPU`);
    // Vendor VFIO cards: a virtual function with a type is one vGPU,
    // rackboot's unless no VM of the host holds it (an operator's).
    const foreign = new Set(a.foreign_vfs || []);
    const typed = (g.vfs || []).filter((v) => v.type && !foreign.has(v.pci_address));
    if (typed.length) parts.push(`${typed.length} vGPU (VF)`);
    const others = (g.vfs || []).filter((v) => foreign.has(v.pci_address));
    if (others.length) parts.push(`${others.length} VF used outside rackboot`);
    return `GPU ${g.index}: ${parts.join(', ') || 'nothing'}`;
  }).join(' · ');
  const seen = new Date(a.seen).toLocaleString();
  return h('div', { class: 'hv-agent' },
    h('p', { class: ['small', a.stale ? 'alert alert-warn' : 'muted'] },
      `GPU agent: ${a.stale ? 'silent since' : 'seen'} ${seen} · applied ${a.applied || 'nothing'}${carried ? ' · ' + carried : ''}`),
    ...(a.errors || []).map((e) => h('p', { class: 'alert alert-error small hv-agent-error', text: e })));
}

export function hypervisorsPage(root) {
  let alive = true;
  let known = new Set();
  const status = h('span', { class: 'muted', id: 'hv-status', 'aria-live': 'polite' });
  const totals = h('div', { id: 'hv-totals' });
  const list = h('div', { class: 'hv-list', id: 'hypervisors' }, empty('Loading…'));
  clear(root, h('div', { class: 'page-head' }, h('h1', { text: 'Hypervisors' }), status),
    card('Fleet', totals, { id: 'fleet' }), list);

  function hvCard(hv) {
    const s = hv.settings || {};
    const drain = can('admin') ? h('button', {
      type: 'button', class: ['btn', 'btn-small', !s.drained && 'btn-danger-quiet'], 'data-drain': s.drained ? 'off' : 'on',
      text: s.drained ? 'Undrain' : 'Drain', onclick: () => setDrained(hv, !s.drained),
    }) : null;
    const native = (hv.native || []).length ? `KVM: ${hv.native.join(', ')}` : 'no KVM';
    const emulated = (s.emulated || []).length ? ` · TCG: ${s.emulated.join(', ')}` : '';
    return h('section', { class: ['card', 'hv', s.drained && 'hv-drained'], 'data-hypervisor': hv.node, 'aria-label': `Hypervisor ${hv.name || hv.node}` },
      h('div', { class: 'card-head' },
        h('h2', {}, h('a', { href: `#/nodes/${enc(hv.node)}`, class: 'hv-link', text: hv.name || hv.node })),
        chip(hv.arch || '?'), chip(gpuMode(s)),
        s.drained ? h('span', { class: 'badge hv-drained-badge', text: 'drained' }) : null,
        drain ? h('div', { class: 'card-actions' }, drain) : null),
      h('div', { class: 'card-body' },
        hv.unplaceable ? h('p', { class: 'alert alert-warn hv-unplaceable', text: `Takes no VMs: ${hv.unplaceable}` }) : null,
        h('div', { class: 'meters' }, meters(hv.usage, s.gpu_mode)),
        agentLine(hv.agent),
        h('h3', { class: 'hv-vms-title', text: `VMs (${(hv.vms || []).length})` }),
        vmLinks(hv.vms),
        h('p', { class: 'muted small hv-conf' }, mono(s.uri || '—'), ` · ${native}${emulated} · bridge ${s.bridge || '—'} · pool ${s.pool || '—'}`)));
  }

  async function setDrained(hv, on) {
    const name = hv.name || hv.node;
    try {
      const res = await confirmDialog({
        title: on ? `Drain ${name}?` : `Undrain ${name}?`, ok: on ? 'Drain' : 'Undrain', danger: on,
        body: [h('p', {}, h('strong', { text: name }), on
          ? ' takes no new VMs. The VMs on it keep running; move them before the host goes away.'
          : ' takes new VMs again.'),
        on && (hv.vms || []).length ? h('p', { text: `To move: ${hv.vms.map((v) => v.name || v.id).join(', ')}` }) : null],
        run: () => patch(`/hypervisors/${enc(hv.node)}`, { drained: on }),
      });
      if (!res || res === true) return;
      toast(on ? `Drained ${name}` : `Undrained ${name}`);
      load();
    } catch (e) {
      toast(e.message, 'error');
    }
  }

  let loads = 0;
  async function load() {
    const mine = ++loads;
    try {
      const res = await get('/hypervisors');
      if (!alive || mine !== loads) return;
      const items = res.items || [];
      known = new Set([...items.map((hv) => hv.node), ...items.flatMap((hv) => (hv.vms || []).map((v) => v.id))]);
      const t = res.total;
      status.textContent = `${items.length} hypervisor${items.length === 1 ? '' : 's'}, ${t ? t.vms : 0} VM${t && t.vms === 1 ? '' : 's'}`;
      clear(totals, t && items.length ? h('div', { class: 'meters meters-wide' }, meters(t, items.some((hv) => hv.settings?.gpu_mode === 'mig') ? 'mig' : '')) : empty('No hypervisors yet: an admin makes an inspected node one with rackboot hypervisor add.'));
      clear(list, items.map(hvCard));
    } catch (e) {
      if (mine !== loads) return;
      clear(totals);
      clear(list, errorBox(e));
    }
  }
  load();
  const reload = debounce(load, 300);
  return {
    dispose() { alive = false; },
    onEvent(ev) {
      if (ev.kind === 'vm' || ev.kind === 'hypervisor' || known.has(ev.node_id)) reload();
    },
  };
}

// ---------------------------------------------------------------- VM list and create form

function devicesText(devs) {
  if (!devs || !devs.length) return dash();
  return devs.map((d) => h('div', { class: 'gpu', text: `${d.kind}${d.profile ? ` ${d.profile}` : ''} · ${d.gpu}` }));
}

function shapeText(v) {
  return `${v.arch} · ${v.vcpus} vCPU · ${mib(v.memory_mib)} · ${v.disk_gib} GiB`;
}

function vmRow(v) {
  return h('tr', { 'data-vm': v.id },
    h('td', { class: 'name' }, h('a', { href: `#/vms/${enc(v.id)}`, class: 'node-link', text: v.name || v.id })),
    h('td', {}, stateBadge(v.node_state)),
    h('td', {}, v.hypervisor?.id ? h('a', { href: `#/nodes/${enc(v.hypervisor.id)}`, text: v.hypervisor.name || v.hypervisor.id }) : dash()),
    h('td', { text: v.flavor || '—' }),
    h('td', { text: v.image || '—' }),
    h('td', { class: 'nowrap', text: shapeText(v) }),
    h('td', { class: 'gpus' }, devicesText(v.devices)),
    h('td', { class: 'nowrap' }, timeEl(v.created)));
}

function flavorLabel(f) {
  const gpu = f.gpu_mode ? ` · ${f.gpu_mode}${f.gpu_profile ? ` ${f.gpu_profile}` : ''}${f.gpu_count > 1 ? ` ×${f.gpu_count}` : ''}${f.gpu_model ? ` (${f.gpu_model})` : ''}` : '';
  return `${f.name} — ${f.vcpus} vCPU, ${mib(f.memory_mib)}, ${f.disk_gib} GiB, ${f.arch}${gpu}`;
}

// planView is a dry run's answer: where the VM would go and what it
// would hold.
function planView(v) {
  return h('div', { class: 'alert alert-ok', id: 'vm-plan', role: 'status' },
    h('p', {}, h('strong', { text: `${v.name} fits on ` }),
      h('a', { href: `#/nodes/${enc(v.hypervisor.id)}`, id: 'vm-plan-host', text: v.hypervisor.name || v.hypervisor.id }),
      `: ${shapeText(v)}, NUMA ${v.numa < 0 ? 'spread' : `node ${v.numa}`}.`),
    v.placement ? h('p', { class: 'small', id: 'vm-plan-note', text: v.placement }) : null,
    (v.devices || []).length ? h('ul', { class: 'small plan-devices' }, v.devices.map((d) => h('li', { text: deviceLine(d) }))) : null,
    v.xml ? h('details', {}, h('summary', { text: 'Domain XML' }), h('pre', { class: 'json', text: v.xml })) : null);
}

function deviceLine(d) {
  return `${d.kind}${d.profile ? ` ${d.profile}` : ''} on GPU ${d.gpu}${d.kind === 'mig' || d.kind === 'vgpu' ? `, slot ${d.slot}` : ''}`;
}

function createForm(onCreated) {
  const name = h('input', { name: 'name', required: true, autocomplete: 'off', maxlength: 63, pattern: '[a-z0-9]([a-z0-9\\-]*[a-z0-9])?', placeholder: 'e.g. train-01', spellcheck: 'false', autocapitalize: 'none' });
  const flavor = select('flavor', [['', 'Loading…']], '');
  flavor.required = true;
  const image = select('image', [['', 'Loading…']], '');
  const host = select('hypervisor', [['', 'Any: placement chooses']], '');
  const check = h('button', { type: 'button', class: 'btn', id: 'vm-check', text: 'Check placement' });
  const create = h('button', { type: 'submit', class: 'btn btn-primary', id: 'vm-create', text: 'Create' });
  const err = h('p', { class: 'alert alert-error', id: 'vm-error', role: 'alert', hidden: true });
  const answer = h('div', { id: 'vm-answer', 'aria-live': 'polite' });
  const form = h('form', { class: 'form-grid', id: 'vm-form', 'aria-label': 'New VM' },
    field('Name', name, 'a DNS label: lower-case letters, digits and -'),
    field('Flavor', flavor), field('Image', image, 'the one to deploy it with, of the flavor\'s arch; deploy from its node page once it is available'),
    field('Hypervisor', host), err, answer,
    h('div', { class: 'form-buttons' }, check, create));

  let flavors = [];
  let images = [];
  function fillImages() {
    const f = flavors.find((x) => x.name === flavor.value);
    const keep = image.value;
    clear(image, h('option', { value: '', text: 'None' }), images.map((im) => {
      const wrong = f && im.arch && im.arch !== f.arch;
      return h('option', { value: im.name, disabled: wrong, selected: im.name === keep && !wrong, text: `${im.name} (${im.arch || '?'})${wrong ? ' — wrong arch' : ''}` });
    }));
  }
  (async () => {
    try {
      const [fl, im, hv] = await Promise.all([get('/flavors'), get('/images'), get('/hypervisors')]);
      flavors = fl.items || [];
      images = im.items || [];
      clear(flavor, h('option', { value: '', text: flavors.length ? 'Choose a flavor…' : 'No flavors: an admin adds them' }),
        flavors.map((f) => h('option', { value: f.name, text: flavorLabel(f) })));
      fillImages();
      for (const x of hv.items || []) host.append(h('option', { value: x.node, text: `${x.name || x.node}${x.settings?.drained ? ' (drained)' : ''}` }));
    } catch (e) {
      err.textContent = e.message;
      err.hidden = false;
    }
  })();

  // Whatever changes, the last answer no longer holds.
  const stale = () => { clear(answer); err.hidden = true; };
  flavor.addEventListener('change', () => { fillImages(); stale(); });
  for (const el of [name, image, host]) el.addEventListener('change', stale);
  name.addEventListener('input', stale);

  const body = (dry) => ({
    name: name.value.trim(), flavor: flavor.value, ...(image.value ? { image: image.value } : {}),
    ...(host.value ? { hypervisor: host.value } : {}), ...(dry ? { dry_run: true } : {}),
  });
  async function send(dry) {
    if (!form.reportValidity()) return;
    stale();
    check.disabled = create.disabled = true;
    try {
      const v = await post('/vms', body(dry));
      if (dry) clear(answer, planView(v));
      else onCreated(v);
    } catch (e) {
      if (e instanceof APIError && e.code === 'no_host') {
        clear(answer, h('div', { class: 'alert alert-error', id: 'vm-refusal', role: 'alert' },
          h('strong', { text: 'No hypervisor takes it: ' }), e.message));
      } else {
        err.textContent = e.message;
        err.hidden = false;
      }
    } finally {
      check.disabled = create.disabled = false;
    }
  }
  check.addEventListener('click', () => send(true));
  form.addEventListener('submit', (e) => { e.preventDefault(); send(false); });
  return form;
}

export function vmsPage(root) {
  let alive = true;
  const status = h('span', { class: 'muted', id: 'vms-status', 'aria-live': 'polite' });
  const tbody = h('tbody', { id: 'vms-body' });
  const errEl = h('p', { class: 'alert alert-error', role: 'alert', hidden: true });
  const heads = ['Name', 'Node state', 'Hypervisor', 'Flavor', 'Image', 'Shape', 'GPU devices', 'Created'];
  const table = h('div', { class: 'table-wrap' }, h('table', { class: 'grid', id: 'vms-table' },
    h('caption', { class: 'sr-only', text: 'VMs' }),
    h('thead', {}, h('tr', {}, heads.map((c) => h('th', { scope: 'col', text: c })))), tbody));
  const form = can('tech') ? card('New VM', createForm((v) => {
    toast(`Created ${v.name} on ${v.hypervisor.name || v.hypervisor.id}`);
    location.hash = `#/vms/${enc(v.id)}`;
  }), { id: 'vm-new' }) : null;
  clear(root, h('div', { class: 'page-head' }, h('h1', { text: 'VMs' }), status), errEl, table, form);

  let loads = 0;
  async function load() {
    const mine = ++loads;
    try {
      const items = (await get('/vms')).items || [];
      if (!alive || mine !== loads) return;
      errEl.hidden = true;
      status.textContent = `${items.length} VM${items.length === 1 ? '' : 's'}`;
      clear(tbody, items.length ? items.map(vmRow) : h('tr', {}, h('td', { colspan: heads.length, class: 'empty', text: 'No VMs yet.' })));
    } catch (e) {
      if (mine !== loads) return;
      errEl.textContent = e.message;
      errEl.hidden = false;
    }
  }
  load();
  const reload = debounce(load, 300);
  return {
    dispose() { alive = false; },
    onEvent(ev) {
      if (ev.kind === 'vm' || $(`tr[data-vm="${CSS.escape(ev.node_id || '')}"]`, tbody)) reload();
    },
  };
}

// ---------------------------------------------------------------- a VM

// VM_ACTIONS are libvirt's, with the states each makes sense in.
const VM_ACTIONS = [
  { id: 'start', label: 'Start', text: 'is started.', when: ['shut off', 'crashed'] },
  { id: 'stop', label: 'Stop', text: 'is asked to shut down (ACPI); the guest decides.', when: ['running'] },
  { id: 'reboot', label: 'Reboot', text: 'is asked to reboot; the guest decides.', when: ['running'] },
  { id: 'poweroff', label: 'Power off', text: 'is stopped at once, whatever it runs.', when: ['running', 'paused'], danger: true },
];

const KNOWN_STATES = ['running', 'shut off', 'paused', 'crashed', 'blocked', 'pmsuspended', 'shutdown'];

export function vmPage(root, id) {
  let alive = true;
  let vm = null;
  let refreshes = 0;
  const title = h('h1', { id: 'vm-title', text: id });
  const badges = h('span', { class: 'head-badges' });
  const sub = h('div', { class: 'sub mono' });
  const errEl = h('div', { class: 'alert alert-error', id: 'vm-page-error', role: 'alert', hidden: true });
  const summary = h('div', {}, empty('Loading…'));
  const devices = h('div', { id: 'vm-devices' });
  const actions = h('div', { class: 'actions', id: 'vm-actions' });
  clear(root,
    h('nav', { class: 'crumbs', 'aria-label': 'Breadcrumb' }, h('a', { href: '#/vms', text: 'VMs' }), ' / ', h('span', { text: id })),
    h('div', { class: 'page-head node-head', id: 'vm-page', 'data-vm': id },
      h('div', {}, h('div', { class: 'title-row' }, title, badges), sub)),
    errEl,
    h('div', { class: 'node-grid' },
      h('div', { class: 'col-main' },
        card('Summary', summary, { id: 'vm-summary' }),
        card('GPU devices', devices, { id: 'vm-devices-card' })),
      h('div', { class: 'col-side' },
        can('tech') ? card('Actions', actions, { id: 'vm-actions-card' })
          : h('p', { class: 'readonly-note', text: 'Read-only access: VM actions need the tech role.' }))));

  function showError(msg) {
    if (!msg) { errEl.hidden = true; return; }
    clear(errEl, h('strong', { text: 'Refused: ' }), msg,
      h('button', { type: 'button', class: 'btn btn-small btn-quiet close', 'aria-label': 'Dismiss', text: '×', onclick: () => { errEl.hidden = true; } }));
    errEl.hidden = false;
  }

  // The libvirt state is the daemon's word, or why it could not be asked.
  function libvirtState() {
    const s = vm.state || '';
    if (KNOWN_STATES.includes(s)) return stateBadge(s);
    return h('span', { class: 'error-text', text: s || 'not known' });
  }

  function render() {
    const name = vm.name || vm.id;
    document.title = `${name} · rackboot`;
    title.textContent = name;
    root.querySelector('.crumbs span').textContent = name;
    clear(badges, h('span', { id: 'vm-state' }, libvirtState()), chip('vm'));
    clear(sub, vm.id, vm.uuid ? ` · ${vm.uuid}` : '');
    const rows = [
      ['Libvirt state', h('span', { id: 'vm-libvirt-state' }, libvirtState())],
      ['Node', h('span', { id: 'vm-node' }, h('a', { href: `#/nodes/${enc(vm.id)}`, text: name }), ' ', stateBadge(vm.node_state))],
      ['Hypervisor', vm.hypervisor?.id ? h('a', { href: `#/nodes/${enc(vm.hypervisor.id)}`, id: 'vm-hypervisor', text: vm.hypervisor.name || vm.hypervisor.id }) : dash()],
      ['Flavor', vm.flavor || '—'],
      ['Image', vm.image || '—'],
      ['Shape', shapeText(vm)],
      ['MAC', mono(vm.mac)],
      ['Volume', mono(vm.volume)],
      ['NUMA', vm.numa < 0 ? 'spread over the host\'s NUMA nodes' : `node ${vm.numa}`],
      ['Placement', h('span', { id: 'vm-placement', text: vm.placement || '—' })],
      ['Created', h('span', {}, timeEl(vm.created), h('span', { class: 'muted', text: ` (${fmtTime(vm.created)})` }))],
    ];
    const dl = h('dl', { class: 'kv kv-wide', id: 'vm-summary-list' });
    for (const [k, v] of rows) dl.append(h('dt', { text: k }), h('dd', {}, v));
    clear(summary, dl);
    const devs = vm.devices || [];
    clear(devices, devs.length ? h('div', { class: 'table-wrap' }, h('table', { class: 'grid grid-compact', id: 'vm-devices-table' },
      h('thead', {}, h('tr', {}, ['Kind', 'GPU', 'Device', 'Slot', 'Profile', 'Mediated device'].map((c) => h('th', { scope: 'col', text: c })))),
      h('tbody', {}, devs.map((d) => h('tr', { 'data-kind': d.kind },
        h('td', { text: d.kind }), h('td', { class: 'mono', text: d.gpu }), h('td', { class: 'mono', text: d.device }),
        h('td', { class: 'num', text: String(d.slot) }), h('td', { text: d.profile || '—' }), h('td', { class: 'mono small', text: d.mdev || '—' }))))))
      : empty('No GPU devices.'));
    renderActions();
  }

  function renderActions() {
    if (!can('tech')) return;
    const known = KNOWN_STATES.includes(vm.state);
    clear(actions, h('div', { class: 'action-buttons' },
      VM_ACTIONS.map((a) => {
        const ok = !known || a.when.includes(vm.state);
        return h('button', {
          type: 'button', class: ['btn', a.danger && 'btn-danger-quiet'], 'data-vm-action': a.id, disabled: !ok,
          title: ok ? null : `not possible while the VM is ${vm.state}`, text: a.label, onclick: () => runAction(a),
        });
      }),
      h('button', { type: 'button', class: 'btn btn-danger-quiet', 'data-vm-action': 'delete', text: 'Delete', onclick: deleteVM })),
    h('p', { class: 'muted small', text: 'Each action asks for confirmation and is recorded with your name.' }));
  }

  async function runAction(a) {
    showError('');
    const name = vm.name || vm.id;
    try {
      const res = await confirmDialog({
        title: `${a.label} ${name}?`, ok: a.label, danger: !!a.danger,
        body: [h('p', {}, h('strong', { text: name }), ` (${vm.state || 'state not known'}) ${a.text}`)],
        run: () => post(`/vms/${enc(vm.id)}/actions/${a.id}`),
      });
      if (!res || res === true) return;
      refreshes++; // an answer to a refresh started before the action is stale
      vm = res;
      render();
      toast(`${a.label}: done`);
    } catch (e) {
      showError(e.message);
      refresh();
    } finally {
      $(`[data-vm-action="${a.id}"]`, actions)?.focus();
    }
  }

  async function deleteVM() {
    showError('');
    const name = vm.name || vm.id;
    try {
      const ok = await confirmDialog({
        title: `Delete ${name}?`, ok: 'Delete VM', danger: true,
        body: [h('p', {}, h('strong', { text: name }), ' is destroyed and undefined on its hypervisor, its volume deleted, its GPU devices freed and its node forgotten. Its events stay in the audit log.')],
        run: () => del(`/vms/${enc(vm.id)}`),
      });
      if (ok) { toast(`Deleted ${name}`); location.hash = '#/vms'; }
    } catch (e) { showError(e.message); }
  }

  async function refresh() {
    const mine = ++refreshes;
    try {
      const v = await get(`/vms/${enc(id)}`);
      // An older answer must not overwrite a newer one.
      if (!alive || mine !== refreshes) return;
      vm = v;
      render();
    } catch (e) {
      if (!alive || mine !== refreshes) return;
      if (e.status === 404) {
        clear(root, h('h1', { text: 'VM not found' }), h('p', {}, `No VM ${id}. `, h('a', { href: '#/vms', text: 'Back to the VMs' })));
        alive = false;
      } else showError(e.message);
    }
  }
  refresh();
  const later = debounce(refresh, 200);
  return {
    dispose() { alive = false; },
    onEvent(ev) { if (vm && ev.node_id === vm.id) later(); },
  };
}
