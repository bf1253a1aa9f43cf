// Shared pieces of the UI shell: who is logged in, toasts, the confirm
// dialog and the hash route's parameters.

import { clear, $ } from './dom.js';
import { APIError } from './api.js';

const ranks = { readonly: 1, tech: 2, admin: 3 };

// session is who is logged in; view is the page on screen.
export const session = { me: null };

export function can(role) {
  return !!session.me && (ranks[session.me.role] || 0) >= ranks[role];
}

export function me() { return session.me; }

// ---------------------------------------------------------------- toasts

let toastTimer;
export function toast(text, kind = 'ok') {
  const t = $('#toast');
  t.textContent = text;
  t.className = `toast toast-${kind}`;
  t.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { t.hidden = true; }, 4000);
}

// ---------------------------------------------------------------- dialog

// confirmDialog asks before something happens. body is a list of nodes
// (text, form fields); run gets the dialog's form and does the work: a
// thrown APIError with status 400 stays in the dialog, anything else
// closes it and is handed to the caller.
export function confirmDialog({ title, body, ok = 'Confirm', danger = false, run }) {
  const dlg = $('#confirm');
  const form = $('#confirm-form');
  const okBtn = $('#confirm-ok');
  const errEl = $('#confirm-error');
  clear($('#confirm-title'), title);
  clear($('#confirm-body'), body || []);
  okBtn.textContent = ok;
  okBtn.className = `btn ${danger ? 'btn-danger' : 'btn-primary'}`;
  okBtn.disabled = false;
  errEl.hidden = true;
  return new Promise((resolve, reject) => {
    let settled = false;
    const finish = (fn, v) => {
      if (settled) return;
      settled = true;
      form.removeEventListener('submit', onSubmit);
      dlg.removeEventListener('close', onClose);
      if (dlg.open) dlg.close();
      fn(v);
    };
    // The close event of a dialog comes as a task of its own, after the
    // dialog closed: one from the previous confirmation may arrive after
    // this one opened (a quick click after Escape), and must not close it.
    const onClose = () => { if (!dlg.open) finish(resolve, null); };
    const onSubmit = async (e) => {
      const submitter = e.submitter;
      if (submitter && submitter.value === 'cancel') return; // method=dialog closes it
      e.preventDefault();
      if (!form.reportValidity()) return;
      okBtn.disabled = true;
      try {
        const out = run ? await run(form) : true;
        finish(resolve, out ?? true);
      } catch (err) {
        okBtn.disabled = false;
        if (err instanceof APIError && err.status === 400) {
          errEl.textContent = err.message;
          errEl.hidden = false;
          return;
        }
        finish(reject, err);
      }
    };
    form.addEventListener('submit', onSubmit);
    dlg.addEventListener('close', onClose);
    dlg.showModal();
    const first = $('#confirm-body input, #confirm-body select, #confirm-body textarea', dlg);
    (first || okBtn).focus();
  });
}

export function hashParams() {
  const hash = location.hash.slice(1);
  const i = hash.indexOf('?');
  return new URLSearchParams(i >= 0 ? hash.slice(i + 1) : '');
}

