// Distribution: the application queue (approve / reject with a reason), the
// distributors by standing (suspend / reinstate), commission withdrawals waiting
// for a decision, and this month's ranks. Buttons show only with
// `distribution_manage`; the API checks the role whatever this page shows.

import { newKey } from '../shared/api.js';
import { h, replace, notice, table, when, load } from '../shared/dom.js';
import { formatCount, formatFen } from '../shared/money.js';

const PAGE = 50;
const REASON_MAX = 200;

const can = (session, permission) => session.permissions.includes(permission);

/** A member's id as a link to the member's page, shortened for the table. */
function memberLink(id) {
  return h('a', { href: `#/members/${id}`, title: id }, id.slice(0, 8));
}

/**
 * One decision button per row and intent: its Idempotency-Key is kept across
 * retries and double clicks of the same intent, so a decision is taken once.
 */
function decisionButton(label, keys, intent, run, { secondary = false } = {}) {
  const button = h('button', { type: 'button', class: secondary ? 'secondary' : null, dataset: { intent } }, label);
  button.addEventListener('click', async () => {
    if (!keys.has(intent)) keys.set(intent, newKey());
    button.disabled = true;
    try {
      await run(keys.get(intent));
    } finally {
      button.disabled = false;
    }
  });
  return button;
}

/** A reason input and a button that sends it (reject, suspend). */
function reasonForm(label, keys, intent, run) {
  const input = h('input', { type: 'text', name: 'reason', maxlength: REASON_MAX, required: true, placeholder: 'Reason', 'aria-label': `${label}: reason` });
  const form = h('form', { class: 'inline compact', dataset: { intent } }, input, h('button', { type: 'submit', class: 'secondary' }, label));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const reason = input.value.trim();
    if (!reason) return;
    // A new reason is a new intent; the same reason again is a retry of it.
    const keyName = `${intent}:${reason}`;
    if (!keys.has(keyName)) keys.set(keyName, newKey());
    await run(keys.get(keyName), reason);
  });
  return form;
}

function applicationsPanel(api, session, refreshAll) {
  const panel = h('section', { class: 'panel', 'aria-labelledby': 'dist-applications' });
  const status = h('div', { 'aria-live': 'polite' });
  const list = h('div', { id: 'dist-applications-list' });
  const keys = new Map();
  const decide = async (what, path, body, key, done) => {
    replace(status, notice('loading', `${what}…`));
    try {
      await api.write('POST', path, body, key);
      replace(status, notice('ok', done));
      refreshAll();
    } catch (error) {
      replace(status, notice('error', `${what} failed: ${error.message}`));
    }
  };
  const show = () => load(list, 'the applications', () => api.get('/distributor-applications', { limit: PAGE }), (page) => {
    const columns = [
      { label: 'Member', value: (d) => memberLink(d.member_id) },
      { label: 'Applied', value: (d) => when(d.applied_at) },
    ];
    if (can(session, 'distribution_manage')) {
      columns.push({
        label: 'Decision',
        value: (d) => h('div', { class: 'actions' },
          decisionButton('Approve', keys, `approve:${d.member_id}`, (key) =>
            decide('Approving', `/distributors/${d.member_id}/approve`, undefined, key, `Approved ${d.member_id.slice(0, 8)}.`)),
          reasonForm('Reject', keys, `reject:${d.member_id}`, (key, reason) =>
            decide('Rejecting', `/distributors/${d.member_id}/reject`, { reason }, key, `Rejected ${d.member_id.slice(0, 8)}.`))),
      });
    }
    return table('Applications waiting for a decision', columns, page.distributors, 'No application is waiting.');
  });
  panel.append(h('h3', { id: 'dist-applications' }, 'Applications'), status, list);
  show();
  return { panel, show };
}

function distributorsPanel(api, session, refreshAll) {
  const panel = h('section', { class: 'panel', 'aria-labelledby': 'dist-distributors' });
  const standing = h('select', { id: 'dist-standing', name: 'standing' },
    h('option', { value: 'active' }, 'Active'), h('option', { value: 'suspended' }, 'Suspended'),
    h('option', { value: 'rejected' }, 'Rejected'), h('option', { value: '' }, 'All'));
  const status = h('div', { 'aria-live': 'polite' });
  const list = h('div', { id: 'dist-distributors-list' });
  const keys = new Map();
  const change = async (what, path, body, key) => {
    replace(status, notice('loading', `${what}…`));
    try {
      await api.write('POST', path, body, key);
      replace(status, notice('ok', `${what}: done.`));
      refreshAll();
    } catch (error) {
      replace(status, notice('error', `${what} failed: ${error.message}`));
    }
  };
  const show = () => load(list, 'the distributors', () => api.get('/distributors', { standing: standing.value, limit: PAGE }), (page) => {
    const columns = [
      { label: 'Member', value: (d) => memberLink(d.member_id) },
      { label: 'Code', value: (d) => d.code },
      { label: 'Standing', value: (d) => d.standing },
      { label: 'Route', value: (d) => d.route ?? '' },
      { label: 'Since', value: (d) => when(d.enrolled_at ?? d.updated_at) },
      { label: 'Reason', value: (d) => d.reason ?? '' },
    ];
    if (can(session, 'distribution_manage')) {
      columns.push({
        label: 'Change',
        value: (d) => {
          if (d.standing === 'active') {
            return reasonForm('Suspend', keys, `suspend:${d.member_id}`, (key, reason) =>
              change('Suspending', `/distributors/${d.member_id}/suspend`, { reason }, key));
          }
          if (d.standing === 'suspended') {
            return decisionButton('Reinstate', keys, `reinstate:${d.member_id}`, (key) =>
              change('Reinstating', `/distributors/${d.member_id}/reinstate`, undefined, key));
          }
          return '';
        },
      });
    }
    const more = page.next_after ? h('p', {}, `Showing the first ${PAGE}.`) : null;
    return [table('Distributors', columns, page.distributors, 'No distributor in this standing.'), more];
  });
  standing.addEventListener('change', show);
  panel.append(h('h3', { id: 'dist-distributors' }, 'Distributors'),
    h('div', { class: 'field' }, h('label', { for: 'dist-standing' }, 'Standing'), standing), status, list);
  show();
  return { panel, show };
}

function withdrawalsPanel(api, session) {
  const panel = h('section', { class: 'panel', 'aria-labelledby': 'dist-withdrawals' });
  const status = h('div', { 'aria-live': 'polite' });
  const list = h('div', { id: 'dist-withdrawals-list' });
  const keys = new Map();
  const decide = async (what, path, body, key) => {
    replace(status, notice('loading', `${what}…`));
    try {
      const answer = await api.write('POST', path, body, key);
      replace(status, notice('ok', `${what}: ${formatFen(answer.payout_fen)} now ${answer.state}.`));
      show();
    } catch (error) {
      replace(status, notice('error', `${what} failed: ${error.message}`));
    }
  };
  const show = () => load(list, 'the withdrawals', () => api.get('/commission-withdrawals', { state: 'requested', limit: PAGE }), (page) => {
    const columns = [
      { label: 'Distributor', value: (w) => memberLink(w.distributor_id) },
      { label: 'Amount', numeric: true, value: (w) => formatFen(w.amount_fen) },
      { label: 'Fee', numeric: true, value: (w) => formatFen(w.fee_fen) },
      { label: 'Paid out', numeric: true, value: (w) => formatFen(w.payout_fen) },
      { label: 'Requested', value: (w) => when(w.requested_at) },
    ];
    if (can(session, 'distribution_manage')) {
      columns.push({
        label: 'Decision',
        value: (w) => h('div', { class: 'actions' },
          decisionButton('Approve', keys, `approve:${w.withdrawal_id}`, (key) =>
            decide('Approving', `/commission-withdrawals/${w.withdrawal_id}/approve`, undefined, key)),
          reasonForm('Reject', keys, `reject:${w.withdrawal_id}`, (key, reason) =>
            decide('Rejecting', `/commission-withdrawals/${w.withdrawal_id}/reject`, { reason }, key))),
      });
    }
    return table('Withdrawals waiting for a decision', columns, page.withdrawals, 'No withdrawal is waiting.');
  });
  panel.append(h('h3', { id: 'dist-withdrawals' }, 'Withdrawals'), status, list);
  show();
  return panel;
}

function ranksPanel(api) {
  const panel = h('section', { class: 'panel', 'aria-labelledby': 'dist-ranks' });
  const by = h('select', { id: 'dist-rank-by', name: 'by' },
    h('option', { value: 'settled_commission' }, 'Settled commission'), h('option', { value: 'new_subordinates' }, 'New subordinates'));
  const period = h('select', { id: 'dist-rank-period', name: 'period' },
    h('option', { value: 'month' }, 'This month'), h('option', { value: 'week' }, 'This week'));
  const list = h('div', { id: 'dist-ranks-list' });
  const show = () => load(list, 'the ranks', () => api.get('/distribution/ranks', { by: by.value, period: period.value, limit: 10 }), (ranking) => [
    h('p', {}, `${ranking.from} to ${ranking.to}`),
    table('Top distributors', [
      { label: '#', numeric: true, value: (r) => r.rank },
      { label: 'Distributor', value: (r) => memberLink(r.distributor_id) },
      { label: by.value === 'settled_commission' ? 'Settled' : 'New subordinates', numeric: true,
        value: (r) => (ranking.by === 'settled_commission' ? formatFen(r.value) : formatCount(r.value)) },
    ], ranking.rows, 'Nobody ranks in this period yet.'),
  ]);
  by.addEventListener('change', show);
  period.addEventListener('change', show);
  panel.append(h('h3', { id: 'dist-ranks' }, 'Ranks'),
    h('div', { class: 'inline' },
      h('div', { class: 'field' }, h('label', { for: 'dist-rank-by' }, 'By'), by),
      h('div', { class: 'field' }, h('label', { for: 'dist-rank-period' }, 'Period'), period)),
    list);
  show();
  return panel;
}

export async function renderDistribution(container, api, session) {
  let applications = null;
  let distributors = null;
  const refreshAll = () => {
    applications?.show();
    distributors?.show();
  };
  applications = applicationsPanel(api, session, refreshAll);
  distributors = distributorsPanel(api, session, refreshAll);
  replace(container, h('h2', {}, 'Distribution'), applications.panel, distributors.panel, withdrawalsPanel(api, session), ranksPanel(api));
}
