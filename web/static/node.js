// A node's page: summary and editing, inventory, live timeline, boot
// trace, tasks, and the lifecycle actions behind a confirmation.

import { h, clear, $, $$, timeEl, fmtTime, stateBadge, chip, mono, field, select, card, empty, debounce, bytes } from './dom.js';
import { api, get, post, patch, del, enc, query, APIError } from './api.js';
import { can, toast, confirmDialog } from './ui.js';
import { inventoryView } from './inventory.js';
import { nodeLabel } from './nodes.js';
import { loadNodeGPUs } from './gpus.js';

// The actions, in the order people meet them, with what the dialog says.
const ACTIONS = [
  { id: 'inspect', label: 'Inspect', text: 'boots the agent and takes an inventory of the hardware. The node moves to inspecting.' },
  { id: 'deploy', label: 'Deploy…', text: 'writes a disk image and boots it. The node moves to deploying, then active.' },
  { id: 'release', label: 'Release', text: 'takes the node back from its user and wipes its disks. The node moves to cleaning.', danger: true },
  { id: 'wipe', label: 'Wipe', text: 'erases every disk of the node. The node moves to cleaning.', danger: true },
  { id: 'burnin', label: 'Burn-in', text: 'stresses CPU, memory, disks, network and GPUs. The node moves to burnin.' },
  { id: 'maintenance', label: 'Maintenance', text: '' },
  { id: 'reboot', label: 'Reboot', text: 'asks the agent to restart the node. The state does not change.' },
];

// POWER are the power actions of a node with a BMC (POST /nodes/{id}/power).
const POWER = [
  { id: 'on', label: 'Power on', text: 'is powered on; power-ons queue behind the server\'s limit.' },
  { id: 'soft-off', label: 'Shut down', text: 'is asked to shut down (ACPI); the OS decides.' },
  { id: 'off', label: 'Power off', text: 'loses power at once, whatever it runs.', danger: true },
  { id: 'cycle', label: 'Power cycle', text: 'is powered off and on again.', danger: true },
  { id: 'reset', label: 'Reset', text: 'is reset at once, whatever it runs.', danger: true },
];

const STAGES = ['dhcp', 'offer', 'loader', 'config', 'kernel', 'initrd', 'handover', 'agent'];

function eventItem(ev, fresh, nodeID) {
  const actor = ev.actor === `agent:${nodeID}` ? 'agent' : ev.actor || 'system';
  const transition = ev.from || ev.to;
  return h('li', { class: ['ev', `ev-${ev.kind}`, fresh && 'flash'], 'data-seq': ev.seq },
    h('div', { class: 'ev-head' },
      h('span', { class: `ev-kind kind-${ev.kind}`, text: ev.kind || 'event' }),
      transition && ev.from !== ev.to ? h('span', { class: 'ev-trans' }, ev.from ? stateBadge(ev.from) : null, ev.from ? ' → ' : '', stateBadge(ev.to)) : null,
      h('span', { class: 'ev-time' }, timeEl(ev.time))),
    ev.message ? h('div', { class: 'ev-msg', text: ev.message }) : null,
    ev.reason ? h('div', { class: 'ev-reason' }, h('span', { class: 'muted', text: 'Reason: ' }), ev.reason) : null,
    h('div', { class: 'ev-actor muted', title: ev.actor || '' }, actor, ' · ', h('span', { text: fmtTime(ev.time) }), ` · #${ev.seq}`));
}

function bootView(b, i) {
  const steps = Array.isArray(b.steps) ? b.steps : [];
  const reached = STAGES.indexOf(b.stage);
  const failed = steps.some((s) => s.ok === false);
  const local = b.stage === 'local';
  const ladder = h('ol', { class: 'stages', 'aria-label': 'Boot stages' }, STAGES.map((s, k) => {
    let cls = 'todo';
    if (local) cls = k <= STAGES.indexOf('config') ? 'done' : 'skip';
    else if (k <= reached) cls = 'done';
    else if (k === reached + 1 && failed) cls = 'stop';
    return h('li', { class: cls, title: cls === 'stop' ? 'stopped here' : cls, text: s });
  }), local ? h('li', { class: 'done', text: 'local disk' }) : null);
  return h('article', { class: ['boot', failed && 'boot-failed'], 'aria-label': `Boot ${i + 1}` },
    h('header', {},
      h('span', { class: 'boot-time' }, timeEl(b.start, false)),
      b.client ? h('span', { class: 'mono muted', text: b.client }) : null,
      h('span', { class: ['chip', failed ? 'chip-warn' : (b.stage === 'handover' || b.stage === 'agent' || local) ? 'chip-ok' : ''], text: `reached: ${b.stage || 'none'}` })),
    h('p', { class: 'verdict-text', text: b.verdict || '' }),
    ladder,
    steps.length ? h('details', { open: i === 0 }, h('summary', { text: `${steps.length} steps` }),
      h('div', { class: 'table-wrap' }, h('table', { class: 'grid grid-compact steps' },
        h('thead', {}, h('tr', {}, ['', 'Time', 'Proto', 'What', 'Detail'].map((c) => h('th', { scope: 'col', text: c })))),
        h('tbody', {}, steps.map((s) => h('tr', { class: s.ok ? '' : 'step-bad' },
          h('td', { class: s.ok ? 'ok' : 'bad', 'aria-label': s.ok ? 'succeeded' : 'failed', text: s.ok ? '✓' : '✗' }),
          h('td', { class: 'nowrap mono small', text: fmtTime(s.time).slice(11) }),
          h('td', { class: 'mono', text: s.proto || '' }),
          h('td', { text: s.what || '' }),
          h('td', { class: 'small', text: s.detail || '' }))))))) : null);
}

// progressView shows a running task's latest progress: the agent sends it
// with its heartbeats and the server keeps it as the task's result.
export function progressView(p) {
  if (!p || typeof p.done !== 'number') return null;
  const pct = p.total > 0 ? Math.min(100, Math.floor((100 * p.done) / p.total)) : null;
  const parts = [p.phase || 'working', p.total > 0 ? `${bytes(p.done)} of ${bytes(p.total)}` : bytes(p.done)];
  if (p.rate > 0) parts.push(`${bytes(p.rate)}/s`);
  return h('div', { class: 'task-progress' },
    pct === null ? null : h('progress', { max: '100', value: String(pct), 'aria-label': `${pct}%` }),
    h('div', { class: 'sub', text: (pct === null ? '' : `${pct}% · `) + parts.join(' · ') }));
}

// resultView sums up what an ended task measured: a deploy's write, each
// disk's wipe, each burn-in test's outcome and figures.
export function resultView(k) {
  const r = k.result;
  if (!r || typeof r !== 'object' || k.state === 'running') return null;
  const lines = [];
  if (k.kind === 'deploy' && r.written) {
    lines.push(`${bytes(r.written)} to ${r.device || 'disk'} at ${Math.round(r.mb_per_s || 0)} MB/s${r.verified ? ', verified' : ''}`);
  } else if (k.kind === 'wipe' && Array.isArray(r.disks)) {
    for (const d of r.disks) lines.push(`${d.disk}: ${d.method}, ${bytes(d.bytes)}, ${d.samples_verified || 0} samples zero`);
  } else if (k.kind === 'burnin' && Array.isArray(r.tests)) {
    if (r.verdict === 'incomplete') lines.push(`incomplete, not passed: ${(r.untested || []).join('; ')}`);
    else if (r.verdict) lines.push(r.verdict);
    for (const t of r.tests) {
      const figs = Object.entries(t.figures || {}).map(([name, v]) => `${name} ${Number.isInteger(v) ? v : v.toFixed(1)}`);
      lines.push(`${t.name}: ${t.outcome}${t.reason ? ` (${t.reason})` : ''}${figs.length ? ' · ' + figs.join(' · ') : ''}`);
    }
  }
  return lines.length ? h('div', { class: 'task-result' }, lines.map((l) => h('div', { class: 'sub', text: l }))) : null;
}

export function nodePage(root, id) {
  let alive = true;
  let node = null;
  let images = null;
  const seen = new Set();
  let editing = false;
  let refreshes = 0; // the newest refresh, so an older answer is dropped

  const title = h('h1', { id: 'node-title', text: id });
  const headBadges = h('span', { class: 'head-badges' });
  const sub = h('div', { class: 'sub mono' });
  const errEl = h('div', { class: 'alert alert-error', id: 'node-error', role: 'alert', hidden: true });
  const summaryBody = h('div', {}, empty('Loading…'));
  const actionsBody = h('div', { class: 'actions', id: 'actions' });
  const timeline = h('ol', { class: 'timeline', id: 'timeline', 'aria-live': 'polite' });
  const traceBody = h('div', { id: 'trace' }, empty('Loading…'));
  const invBody = h('div', { id: 'inventory' }, empty('Loading…'));
  const tasksBody = h('div', { id: 'tasks' });
  const gpusBody = h('div', { id: 'node-gpus' }, empty('Loading…'));
  const gpusCard = card('GPU figures', gpusBody, { id: 'gpus-card' });
  gpusCard.hidden = true;

  const editBtn = can('tech') ? h('button', { type: 'button', class: 'btn btn-small', id: 'edit-node', text: 'Edit' }) : null;
  const deleteBtn = can('admin') ? h('button', { type: 'button', class: 'btn btn-small btn-danger-quiet', id: 'delete-node', text: 'Delete' }) : null;

  clear(root,
    h('nav', { class: 'crumbs', 'aria-label': 'Breadcrumb' }, h('a', { href: '#/nodes', text: 'Nodes' }), ' / ', h('span', { text: id })),
    h('div', { class: 'page-head node-head', id: 'node-page', 'data-node': id },
      h('div', {}, h('div', { class: 'title-row' }, title, headBadges), sub)),
    errEl,
    h('div', { class: 'node-grid' },
      h('div', { class: 'col-main' },
        card('Summary', summaryBody, { id: 'summary', actions: [editBtn, deleteBtn] }),
        card('Inventory', invBody, { id: 'inventory-card' }),
        gpusCard,
        card('Boot trace', traceBody, { id: 'trace-card' })),
      h('div', { class: 'col-side' },
        can('tech') ? card('Actions', actionsBody, { id: 'actions-card' })
          : h('p', { class: 'readonly-note', text: 'Read-only access: node actions and edits need the tech role.' }),
        card('Timeline', [timeline], { id: 'timeline-card', actions: h('span', { class: 'muted small', text: 'live' }) }),
        card('Tasks', tasksBody, { id: 'tasks-card' }))));

  function showError(msg) {
    if (!msg) { errEl.hidden = true; return; }
    clear(errEl, h('strong', { text: 'Refused: ' }), msg,
      h('button', { type: 'button', class: 'btn btn-small btn-quiet close', 'aria-label': 'Dismiss', text: '×', onclick: () => { errEl.hidden = true; } }));
    errEl.hidden = false;
  }

  function renderHead() {
    document.title = `${nodeLabel(node)} · rackboot`;
    title.textContent = nodeLabel(node);
    clear(headBadges, stateBadge(node.state), chip(node.kind || 'metal'), node.owner && node.owner !== 'rackboot' ? chip(`owner: ${node.owner}`, 'warn') : null,
      // A VM's power goes through libvirt, not a BMC: its own page has it.
      node.kind === 'vm' ? h('a', { href: `#/vms/${enc(node.id)}`, id: 'vm-page-link', class: 'small', text: 'VM: libvirt state and actions' }) : null);
    clear(sub, node.id, node.uuid ? ` · ${node.uuid}` : '');
    root.querySelector('.crumbs span').textContent = nodeLabel(node);
  }

  function renderSummary() {
    if (editing) return;
    const sb = node.secure_boot === true ? 'on' : node.secure_boot === false ? 'off' : 'inherit (subnet)';
    const rows = [
      ['State', h('span', {}, stateBadge(node.state), ' since ', timeEl(node.state_changed))],
      ['Power', node.power
        ? h('span', node.power.error ? { title: node.power.error } : {}, `${node.power.state} since `, timeEl(node.power.changed), ', asked ', timeEl(node.power.checked),
          node.power.error ? h('span', { class: 'muted', text: ` — ${node.power.error}` }) : null)
        : 'not known (no BMC, or not asked yet)'],
      ['Architecture', node.arch || '—'],
      ['Firmware', [node.firmware, node.client_arch].filter(Boolean).join(' · ') || '—'],
      ['Secure Boot', sb],
      ['Power', node.power_managed ? 'managed through its BMC: actions power the node into the agent'
        : h('span', { class: 'muted', text: 'no BMC: an action waits for somebody to reboot the node' })],
      ['Rack / unit', node.rack ? `${node.rack}${node.position ? ` / U${node.position}` : ''}` : '—'],
      ['Tags', (node.tags || []).length ? h('span', {}, node.tags.map((t) => chip(t))) : '—'],
      ['Owner', node.owner || '—'],
      ['GPUs', (node.gpu_models || []).length ? h('span', {}, node.gpu_models.map((m) => h('div', { text: m }))) : '—'],
      ['MACs', (node.macs || []).length ? h('span', {}, node.macs.map((m) => h('div', { class: 'mono', text: m }))) : '—'],
      ['First seen', timeEl(node.first_seen, false)],
      ['Last seen', h('span', {}, timeEl(node.last_seen), h('span', { class: 'muted', text: ` (${fmtTime(node.last_seen)})` }))],
    ];
    if (node.last_error) rows.push(['Last error', h('span', { class: 'error-text', text: node.last_error })]);
    const dl = h('dl', { class: 'kv kv-wide', id: 'summary-list' });
    for (const [k, v] of rows) dl.append(h('dt', { text: k }), h('dd', {}, v));
    clear(summaryBody, dl);
  }

  function renderEdit() {
    editing = true;
    const name = h('input', { name: 'name', value: node.name || '', autocomplete: 'off', maxlength: 63 });
    const rack = h('input', { name: 'rack', value: node.rack || '', autocomplete: 'off', maxlength: 32 });
    const pos = h('input', { name: 'position', type: 'number', min: 0, max: 100, value: node.position || 0 });
    const tags = h('input', { name: 'tags', value: (node.tags || []).join(', '), autocomplete: 'off' });
    const owner = select('owner', ['rackboot', 'ironic'], node.owner || 'rackboot');
    const sb = select('secure_boot', [['inherit', 'Inherit from subnet'], ['on', 'On (shim → GRUB)'], ['off', 'Off']],
      node.secure_boot === true ? 'on' : node.secure_boot === false ? 'off' : 'inherit');
    const err = h('p', { class: 'alert alert-error', role: 'alert', hidden: true });
    const save = h('button', { type: 'submit', class: 'btn btn-primary', text: 'Save' });
    const cancel = h('button', { type: 'button', class: 'btn', text: 'Cancel' });
    const form = h('form', { class: 'form-grid', id: 'edit-form' },
      field('Name', name), field('Rack', rack), field('Unit (U)', pos, '0 = unknown'), field('Tags', tags, 'comma-separated'),
      field('Owner', owner), field('Secure Boot path', sb), err,
      h('div', { class: 'form-buttons' }, cancel, save));
    cancel.addEventListener('click', () => { editing = false; renderSummary(); editBtn?.focus(); });
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      save.disabled = true;
      const body = {
        name: name.value.trim(), rack: rack.value.trim(), position: Number(pos.value) || 0,
        tags: tags.value.split(',').map((t) => t.trim()).filter(Boolean), owner: owner.value, secure_boot: sb.value,
      };
      try {
        const n = await patch(`/nodes/${enc(node.id)}`, body);
        node = { ...node, ...n, inventory: node.inventory };
        editing = false;
        renderAll();
        toast('Saved');
        editBtn?.focus();
      } catch (ex) {
        err.textContent = ex.message;
        err.hidden = false;
        save.disabled = false;
      }
    });
    clear(summaryBody, form);
    name.focus();
  }

  function renderActions() {
    if (!can('tech')) return;
    const allowed = Array.isArray(node.actions) ? new Set(node.actions) : null;
    const buttons = ACTIONS.map((a) => {
      let label = a.label;
      if (a.id === 'maintenance') label = node.state === 'maintenance' ? 'End maintenance' : 'Maintenance';
      const ok = !allowed || allowed.has(a.id);
      return h('button', {
        type: 'button', class: ['btn', a.danger && 'btn-danger-quiet'], 'data-action': a.id, disabled: !ok,
        title: ok ? null : `not possible while the node is ${node.state}`, text: label,
        onclick: () => runAction(a),
      });
    });
    const power = node.power_managed ? h('div', { class: 'power-controls', id: 'power-controls' },
      h('h3', { class: 'small', text: 'Power (through the BMC)' }),
      h('div', { class: 'action-buttons' }, POWER.map((p) => h('button', {
        type: 'button', class: ['btn', 'btn-small', p.danger && 'btn-danger-quiet'], 'data-power': p.id, text: p.label,
        onclick: () => runPower(p),
      })), h('button', { type: 'button', class: 'btn btn-small btn-quiet', 'data-power': 'status', text: 'Ask status', onclick: powerStatus })),
      h('div', { class: 'action-buttons' }, ['pxe', 'disk'].map((d) => h('button', {
        type: 'button', class: 'btn btn-small btn-quiet', 'data-boot-device': d, text: d === 'pxe' ? 'Next boot: network' : 'Next boot: disk',
        onclick: () => bootDevice(d),
      })))) : null;
    clear(actionsBody, h('div', { class: 'action-buttons' }, buttons), power,
      h('p', { class: 'muted small', text: 'Each action asks for confirmation and is recorded with your name and reason.' }));
  }

  async function runPower(p) {
    showError('');
    try {
      const res = await confirmDialog({
        title: `${p.label} ${nodeLabel(node)}?`, ok: p.label, danger: !!p.danger,
        body: [h('p', {}, h('strong', { text: nodeLabel(node) }), ` ${p.text}`)],
        run: () => post(`/nodes/${enc(node.id)}/power`, { action: p.id }),
      });
      if (!res || res === true) return;
      if (res.event) addEvent(res.event, true);
      toast(`${p.label}: done`);
      refresh();
    } catch (e) {
      showError(e.message);
    }
  }

  async function powerStatus() {
    showError('');
    try {
      const st = await get(`/nodes/${enc(node.id)}/power`);
      toast(`Power ${st.state}`);
      refresh();
    } catch (e) {
      showError(e.message);
    }
  }

  async function bootDevice(device) {
    showError('');
    try {
      const res = await confirmDialog({
        title: `Boot ${nodeLabel(node)} from ${device === 'pxe' ? 'the network' : 'its disk'} next?`, ok: 'Set',
        body: [h('p', { text: 'Only the next boot, unless every boot is asked for.' }),
          h('label', { class: 'check' }, h('input', { type: 'checkbox', name: 'persistent' }), ' every boot (persistent)')],
        run: (f) => api('PUT', `/nodes/${enc(node.id)}/boot-device`, { device, persistent: f.elements.persistent.checked }),
      });
      if (!res || res === true) return;
      if (res.event) addEvent(res.event, true);
      toast('Boot device set');
    } catch (e) {
      showError(e.message);
    }
  }

  async function imageField() {
    if (!images) images = (await get('/images')).items || [];
    const opts = images.map((im) => {
      const wrong = node.arch && im.arch && im.arch !== node.arch;
      return [im.name, `${im.name} (${im.arch || '?'}, ${im.format || '?'})${wrong ? ' — wrong arch' : ''}`, wrong];
    });
    const sel = select('image', [['', images.length ? 'Choose an image…' : 'No images in the catalog'], ...opts], '');
    sel.required = true;
    return field('Image', sel, node.arch ? `Only ${node.arch} images fit this node.` : null);
  }

  async function runAction(a) {
    showError('');
    const body = [];
    const reason = h('input', { name: 'reason', autocomplete: 'off', placeholder: 'optional, goes into the audit log' });
    let params = () => ({});
    const who = h('strong', { text: nodeLabel(node) });
    let title = `${a.label.replace('…', '')} ${nodeLabel(node)}?`;
    let okLabel = a.label.replace('…', '');
    if (a.id === 'maintenance') {
      const on = node.state !== 'maintenance';
      title = on ? `Put ${nodeLabel(node)} into maintenance?` : `End maintenance of ${nodeLabel(node)}?`;
      okLabel = on ? 'Start maintenance' : 'End maintenance';
      body.push(h('p', {}, who, on ? ' leaves service: rackboot stops acting on it until maintenance ends.'
        : ' goes back to the state it was in before maintenance.'));
      params = () => ({ on });
    } else {
      body.push(h('p', {}, who, ` (${node.state}) `, a.text));
    }
    if (a.id === 'deploy') {
      try { body.push(await imageField()); } catch (e) { showError(e.message); return; }
      params = (f) => ({ image: f.elements.image.value });
    }
    if (a.id === 'wipe' || a.id === 'release') {
      body.push(field('Wipe method', select('method', [['quick', 'Quick: partition tables and signatures'], ['full', 'Full: every block']], 'quick')));
      params = (f) => ({ method: f.elements.method.value });
    }
    if (a.id === 'burnin') {
      body.push(field('Duration', h('input', { name: 'duration', value: '30m', pattern: '^[0-9]+(\\.[0-9]+)?(s|m|h)([0-9]+(s|m|h))*$', required: true }), 'e.g. 10m, 2h'));
      params = (f) => ({ duration: f.elements.duration.value.trim() });
    }
    body.push(field('Reason', reason));
    try {
      const res = await confirmDialog({
        title, body, ok: okLabel, danger: !!a.danger,
        run: (f) => post(`/nodes/${enc(node.id)}/actions/${a.id}`, { ...params(f), ...(reason.value.trim() ? { reason: reason.value.trim() } : {}) }),
      });
      if (!res || res === true) return;
      if (res.node) {
        refreshes++; // an answer to a refresh started before the action is stale
        node = { ...node, ...res.node, inventory: node.inventory };
        renderAll();
      }
      if (res.event) addEvent(res.event, true);
      toast(`${okLabel}: done`);
      loadTasks();
    } catch (e) {
      showError(e.message);
      if (e instanceof APIError && e.status === 409) refresh();
    } finally {
      $(`[data-action="${a.id}"]`, actionsBody)?.focus();
    }
  }

  function addEvent(ev, fresh) {
    if (seen.has(ev.seq)) return;
    seen.add(ev.seq);
    const item = eventItem(ev, fresh, node?.id);
    const first = [...timeline.children].find((li) => Number(li.dataset.seq) < ev.seq);
    timeline.insertBefore(item, first || null);
    $('.empty', timeline.parentNode)?.remove();
    while (timeline.children.length > 300) timeline.lastChild.remove();
  }

  function renderAll() {
    renderHead();
    renderSummary();
    renderActions();
  }

  async function refresh() {
    const mine = ++refreshes;
    try {
      const n = await get(`/nodes/${enc(id)}`);
      // An older answer must not overwrite a newer one.
      if (!alive || mine !== refreshes) return;
      const invChanged = JSON.stringify(n.inventory ?? null) !== JSON.stringify(node?.inventory ?? null);
      node = n;
      renderAll();
      if (invChanged) clear(invBody, inventoryView(n.inventory));
    } catch (e) {
      if (e.status === 404) {
        clear(root, h('h1', { text: 'Node not found' }), h('p', {}, `No node ${id}. `, h('a', { href: '#/nodes', text: 'Back to the nodes' })));
        alive = false;
      } else showError(e.message);
    }
  }

  // Only a node with GPUs has figures to show; a burn-in's end brings
  // new ones.
  function loadGPUs() {
    gpusCard.hidden = !(node?.gpu_models || []).length;
    if (!gpusCard.hidden) loadNodeGPUs(gpusBody, node.id);
  }

  async function loadTimeline() {
    try {
      const page = await get('/events' + query({ node: node.id, order: 'desc', limit: 300 }));
      const evs = (page.items || []).reverse();
      if (!alive) return;
      for (const ev of evs.slice(-300)) addEvent(ev, false);
      if (!timeline.children.length) timeline.parentNode.append(empty('No events yet.'));
    } catch (e) {
      timeline.parentNode.append(h('p', { class: 'alert alert-error', text: e.message }));
    }
  }

  async function loadTrace() {
    try {
      const t = await get(`/nodes/${enc(node.id)}/trace`);
      if (!alive) return;
      const boots = (t.boots || []).slice(-5).reverse();
      clear(traceBody, boots.length ? boots.map(bootView) : empty('No network boots recorded.'));
    } catch (e) {
      clear(traceBody, h('p', { class: 'alert alert-error', text: e.message }));
    }
  }

  // While a task waits or runs its progress changes with no event: poll.
  let taskPoll = null;
  async function loadTasks() {
    clearTimeout(taskPoll);
    try {
      const t = await get(`/tasks?node=${enc(node.id)}`);
      if (!alive) return;
      const items = (t.items || []).slice(-10).reverse();
      if (items.some((k) => k.state === 'running' || k.state === 'pending')) taskPoll = setTimeout(loadTasks, 3000);
      clear(tasksBody, items.length ? h('div', { class: 'table-wrap' }, h('table', { class: 'grid grid-compact' },
        h('thead', {}, h('tr', {}, ['Task', 'State', 'Updated'].map((c) => h('th', { scope: 'col', text: c })))),
        h('tbody', {}, items.map((k) => h('tr', {},
          h('td', {}, k.kind, k.error ? h('div', { class: 'sub error-text', text: k.error }) : null,
            k.state === 'running' ? progressView(k.result) : resultView(k)),
          h('td', {}, h('span', { class: `badge task task-${k.state}`, text: k.state })),
          h('td', { class: 'nowrap' }, timeEl(k.updated || k.created))))))) : empty('No tasks.'));
    } catch (e) {
      clear(tasksBody, h('p', { class: 'alert alert-error', text: e.message }));
    }
  }

  editBtn?.addEventListener('click', () => { if (node) renderEdit(); });
  deleteBtn?.addEventListener('click', async () => {
    try {
      const ok = await confirmDialog({
        title: `Delete ${nodeLabel(node)}?`, ok: 'Delete node', danger: true,
        body: [h('p', { text: 'rackboot forgets the node, its interfaces, boot trace and tasks. Its events stay in the audit log. If it boots again it is enrolled as a new node.' })],
        run: () => del(`/nodes/${enc(node.id)}`),
      });
      if (ok) { toast(`Deleted ${nodeLabel(node)}`); location.hash = '#/nodes'; }
    } catch (e) { showError(e.message); }
  });

  (async () => {
    await refresh();
    if (!alive || !node) return;
    loadTimeline();
    loadTrace();
    loadTasks();
    loadGPUs();
  })();

  const later = debounce(() => { refresh(); loadTasks(); }, 150);
  const gpusLater = debounce(loadGPUs, 500);
  const traceLater = debounce(loadTrace, 1000);
  return {
    dispose() { alive = false; clearTimeout(taskPoll); },
    onEvent(ev) {
      if (!node || ev.node_id !== node.id) return;
      addEvent(ev, true);
      later();
      if (ev.kind === 'transition' || ev.kind === 'audit') traceLater();
      if (ev.kind === 'transition' || ev.kind === 'task') gpusLater();
    },
  };
}
