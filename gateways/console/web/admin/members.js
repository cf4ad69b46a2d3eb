// Members: search the member read model, open a member's card, balances and
// ledger (paged), and check the member's event stream on demand.

import { h, replace, notice, field, table, when } from '../shared/dom.js';
import { formatCount, formatFen } from '../shared/money.js';

const PAGE = 50;
let filters = {};

export async function renderMembers(container, api) {
  const [cardField, card] = field('Card number', { name: 'card_no', inputmode: 'numeric', value: filters.card_no ?? '', placeholder: '10 digits' });
  const [openidField, openid] = field('OpenID', { name: 'openid', value: filters.openid ?? '' });
  const [levelField, level] = field('Card level', { name: 'card_level', value: filters.card_level ?? '' });
  const followed = h('select', { id: 'f-followed', name: 'followed' },
    h('option', { value: '' }, 'Any'), h('option', { value: 'true' }, 'Following'), h('option', { value: 'false' }, 'Not following'));
  followed.value = filters.followed ?? '';
  const results = h('div', { id: 'member-results', 'aria-live': 'polite' });
  const form = h('form', { class: 'inline panel', role: 'search', 'aria-label': 'Find members' },
    cardField, openidField, levelField,
    h('div', { class: 'field' }, h('label', { for: 'f-followed' }, 'Follows the account'), followed),
    h('button', { type: 'submit' }, 'Search'));
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    filters = { card_no: card.value.trim(), openid: openid.value.trim(), card_level: level.value.trim(), followed: followed.value };
    search(null);
  });
  replace(container, h('h2', {}, 'Members'), form, results);

  const pages = [];
  async function search(after) {
    replace(results, notice('loading', 'Searching…'));
    try {
      const page = await api.get('/members', { ...filters, limit: PAGE, after });
      const columns = [
        { label: 'Card', value: (m) => h('a', { href: `#/members/${m.member_id}` }, m.card_no) },
        { label: 'Level', value: (m) => m.card_level },
        { label: 'Points', numeric: true, value: (m) => formatCount(m.points) },
        { label: 'Balance', numeric: true, value: (m) => formatFen(m.balance_fen) },
        { label: 'Source', value: (m) => m.source },
        { label: 'Following', value: (m) => (m.followed ? `yes (${m.follow_source ?? 'other'})` : 'no') },
        { label: 'Registered', value: (m) => when(m.registered_at) },
      ];
      pages.push(after);
      const more = page.next_after
        ? h('button', { type: 'button', class: 'secondary', onclick: () => search(page.next_after) }, 'Next page')
        : null;
      const back = pages.length > 1
        ? h('button', { type: 'button', class: 'secondary', onclick: () => { pages.pop(); search(pages.pop()); } }, 'Previous page')
        : null;
      replace(results, table('Members', columns, page.members, 'No member matches.'), h('div', { class: 'actions' }, back, more));
    } catch (error) {
      replace(results, notice('error', `Could not search: ${error.message}`));
    }
  }
  await search(null);
}

function summary(member) {
  const item = (label, value) => [h('dt', {}, label), h('dd', {}, value)];
  return h('dl', { class: 'card-summary', id: 'member-card' },
    item('Card number', member.card_no),
    item('Card level', member.card_level),
    item('Balance', formatFen(member.balance_fen)),
    item('Points', formatCount(member.points)),
    item('Spendable points', formatCount(member.spendable_points)),
    item('Held points', formatCount(member.held_points)),
    item('Lifetime points', formatCount(member.lifetime_points)),
    item('Registered', when(member.registered_at)),
    item('OpenID', member.openid ?? '—'),
    item('Events', formatCount(member.version)));
}

export async function renderMember(container, api, session, memberId) {
  const card = h('div', { class: 'panel' }, notice('loading', 'Loading the member…'));
  const audit = h('div', { class: 'panel', 'aria-live': 'polite' });
  const ledger = h('div', { class: 'panel' });
  replace(container, h('p', {}, h('a', { href: '#/members' }, '← Members')), h('h2', {}, 'Member'), card, audit, ledger);
  let member;
  try {
    member = await api.get(`/members/${encodeURIComponent(memberId)}`);
  } catch (error) {
    replace(card, notice('error', error.status === 404 ? 'No such member in this tenant.' : `Could not load the member: ${error.message}`));
    return;
  }
  replace(card, summary(member));

  const verify = h('button', { type: 'button', class: 'secondary', id: 'verify-chain' }, 'Verify this member’s events');
  replace(audit, h('h3', {}, 'Audit'), h('p', {}, 'Checks the hash chain of the member’s events and replays them: every balance they state must add up.'), verify);
  verify.addEventListener('click', async () => {
    verify.disabled = true;
    const out = h('div', {}, notice('loading', 'Verifying…'));
    audit.append(out);
    try {
      const verdict = await api.get(`/members/${encodeURIComponent(memberId)}/audit`);
      replace(out, verdict.ok
        ? notice('ok', `Verified: ${verdict.events} events, hash chain intact, every stated balance adds up.`)
        : h('div', {}, notice('error', `${verdict.violations.length} problem(s) found.`),
          table('Problems', [
            { label: 'Sequence', value: (v) => v.sequence ?? '' },
            { label: 'Code', value: (v) => v.code },
            { label: 'What', value: (v) => v.message },
          ], verdict.violations)));
    } catch (error) {
      replace(out, notice('error', `Could not verify: ${error.message}`));
    } finally {
      verify.disabled = false;
    }
  });

  if (!session.permissions.includes('ledger_read')) return;
  const pages = [];
  async function page(after) {
    replace(ledger, h('h3', {}, 'Ledger'), notice('loading', 'Loading the ledger…'));
    try {
      const lines = await api.get(`/members/${encodeURIComponent(memberId)}/ledger`, { limit: PAGE, after });
      pages.push(after);
      const columns = [
        { label: '#', numeric: true, value: (e) => e.sequence },
        { label: 'When', value: (e) => when(e.recorded_at) },
        { label: 'What', value: (e) => e.event_type },
        { label: 'Points', numeric: true, value: (e) => (e.points_delta ? formatCount(e.points_delta) : '') },
        { label: 'Points after', numeric: true, value: (e) => (e.points_after ?? '') === '' ? '' : formatCount(e.points_after) },
        { label: 'Cash', numeric: true, value: (e) => (e.cash_delta_fen ? formatFen(e.cash_delta_fen) : '') },
        { label: 'Balance after', numeric: true, value: (e) => (e.balance_after_fen ?? null) === null ? '' : formatFen(e.balance_after_fen) },
        { label: 'By', value: (e) => e.actor },
        { label: 'Reason', value: (e) => e.reason },
      ];
      const lag = member.version > lines.projected_through_sequence
        ? notice('loading', `Entries after event ${lines.projected_through_sequence} are still on their way.`) : null;
      const more = lines.next_after !== null && lines.next_after !== undefined
        ? h('button', { type: 'button', class: 'secondary', onclick: () => page(lines.next_after) }, 'Next page') : null;
      const back = pages.length > 1
        ? h('button', { type: 'button', class: 'secondary', onclick: () => { pages.pop(); page(pages.pop()); } }, 'Previous page') : null;
      replace(ledger, h('h3', {}, 'Ledger'), lag, table('Ledger lines', columns, lines.entries, 'No ledger lines yet.'), h('div', { class: 'actions' }, back, more));
    } catch (error) {
      replace(ledger, h('h3', {}, 'Ledger'), notice('error', `Could not load the ledger: ${error.message}`));
    }
  }
  await page(null);
}
