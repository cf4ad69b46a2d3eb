// Settings and records: the tenant's WeChat accounts, points rules, scene QR
// codes (with their counts), reply rules and menus; the operation log.

import { newKey } from '../shared/api.js';
import { h, replace, notice, field, table, when, load } from '../shared/dom.js';
import { formatCount } from '../shared/money.js';

const can = (session, permission) => session.permissions.includes(permission);

function expiryText(expiry) {
  switch (expiry?.kind) {
    case 'never': return 'never expire';
    case 'days': return `expire after ${expiry.days} days`;
    case 'end_of_month': return 'expire at the end of the month';
    case 'end_of_year': return 'expire at the end of the year';
    default: return '';
  }
}

function pointsRulesPanel(api, session) {
  const panel = h('section', { class: 'panel', 'aria-labelledby': 'points-rules' });
  const show = async () => load(panel, 'the points rules', () => api.get('/tenant/points-rules'), (rules) => {
    const view = h('div', {}, h('h3', { id: 'points-rules' }, 'Points rules'),
      h('p', {}, `New members get ${formatCount(rules.initial_points)} points; a referrer ${formatCount(rules.referral_level1_points)}, the referrer’s referrer ${formatCount(rules.referral_level2_points)}. Points ${expiryText(rules.expiry)}.`));
    if (!can(session, 'wechat_settings')) return view;
    const [initialField, initial] = field('Initial points', { type: 'number', min: 0, max: 1000000, step: 1, value: rules.initial_points, required: true });
    const [l1Field, l1] = field('Referrer points', { type: 'number', min: 0, max: 1000000, step: 1, value: rules.referral_level1_points, required: true });
    const [l2Field, l2] = field('Referrer’s referrer points', { type: 'number', min: 0, max: 1000000, step: 1, value: rules.referral_level2_points, required: true });
    const status = h('div', { 'aria-live': 'polite' });
    const form = h('form', { class: 'inline' }, initialField, l1Field, l2Field, h('button', { type: 'submit' }, 'Save points rules'), status);
    const key = newKey();
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      replace(status, notice('loading', 'Saving…'));
      try {
        const body = { initial_points: Number(initial.value), referral_level1_points: Number(l1.value), referral_level2_points: Number(l2.value), expiry: rules.expiry };
        await api.write('PUT', '/tenant/points-rules', body, key);
        await show();
      } catch (error) {
        replace(status, notice('error', `Not saved: ${error.message}`));
      }
    });
    view.append(form);
    return view;
  });
  show();
  return panel;
}

function qrCodesPanel(api, session, accounts) {
  const panel = h('section', { class: 'panel', 'aria-labelledby': 'qr-codes' });
  const list = h('div', {});
  const show = () => load(list, 'the QR codes', () => api.get('/wechat/qrcodes'), (answer) => table('Scene QR codes', [
    { label: 'Scene', value: (q) => q.scene },
    { label: 'Name', value: (q) => q.name ?? '' },
    { label: 'Account', value: (q) => q.appid },
    { label: 'Kind', value: (q) => (q.permanent ? 'permanent' : `until ${when(q.expires_at)}`) },
    { label: 'Scans', numeric: true, value: (q) => formatCount(q.landings) },
    { label: 'Follows', numeric: true, value: (q) => formatCount(q.follows) },
  ], answer.items, 'No scene QR code yet.'));
  panel.append(h('h3', { id: 'qr-codes' }, 'Scene QR codes'), list);
  if (can(session, 'wechat_settings') && accounts.length > 0) {
    const appid = h('select', { id: 'qr-appid', name: 'appid' }, accounts.map((a) => h('option', { value: a.appid }, `${a.name} (${a.appid})`)));
    const [sceneField, scene] = field('Scene', { name: 'scene', required: true, maxlength: 64, placeholder: 'e.g. lobby-poster' });
    const [nameField, name] = field('Name', { name: 'name', maxlength: 100 });
    const status = h('div', { 'aria-live': 'polite' });
    const form = h('form', { class: 'inline', 'aria-label': 'New permanent scene QR code' },
      h('div', { class: 'field' }, h('label', { for: 'qr-appid' }, 'Account'), appid), sceneField, nameField,
      h('button', { type: 'submit' }, 'Create QR code'), status);
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      replace(status, notice('loading', 'Creating…'));
      try {
        await api.write('POST', '/wechat/qrcodes', { appid: appid.value, scene: scene.value.trim(), name: name.value.trim() || null, permanent: true }, newKey());
        replace(status, notice('ok', 'Created.'));
        form.reset();
        show();
      } catch (error) {
        replace(status, notice('error', `Not created: ${error.message}`));
      }
    });
    panel.append(form);
  }
  show();
  return panel;
}

function replyRulesPanel(api) {
  const panel = h('section', { class: 'panel', 'aria-labelledby': 'reply-rules' });
  const body = h('div', {});
  panel.append(h('h3', { id: 'reply-rules' }, 'Automatic replies'), body);
  const replyText = (reply) => (!reply ? 'none' : reply.type === 'text' ? reply.content : `${reply.articles.length} article(s): ${reply.articles.map((a) => a.title).join(', ')}`);
  load(body, 'the reply rules', () => api.get('/wechat/reply-rules'), (answer) => h('div', {},
    h('p', {}, `Revision ${answer.revision}. On follow: ${replyText(answer.rules.subscribe)}. Otherwise: ${replyText(answer.rules.default)}.`),
    table('Keyword rules (the first match wins)', [
      { label: 'Keywords', value: (r) => r.keywords.join(', ') },
      { label: 'Match', value: (r) => r.match },
      { label: 'Reply', value: (r) => replyText(r.reply) },
    ], answer.rules.keywords ?? [], 'No keyword rule.')));
  return panel;
}

function menusPanel(api, accounts) {
  const panel = h('section', { class: 'panel', 'aria-labelledby': 'menus' });
  panel.append(h('h3', { id: 'menus' }, 'Menus'));
  for (const account of accounts) {
    const out = h('div', {});
    panel.append(h('h4', {}, `${account.name} (${account.appid})`), out);
    load(out, 'the menu', async () => {
      try {
        return await api.get(`/wechat/menus/${encodeURIComponent(account.appid)}`);
      } catch (error) {
        if (error.status === 404) return null;
        throw error;
      }
    }, (menu) => (!menu ? notice('empty', 'No menu saved.') : h('div', {},
      h('p', {}, menu.published_at ? `Published ${when(menu.published_at)}.` : 'Saved, not published yet.'),
      h('ul', {}, menu.menu.button.map((b) => h('li', {}, b.name, b.sub_button?.length ? h('ul', {}, b.sub_button.map((s) => h('li', {}, s.name))) : null))))));
  }
  if (accounts.length === 0) panel.append(notice('empty', 'No official account is bound.'));
  return panel;
}

export async function renderWechat(container, api, session) {
  replace(container, h('h2', {}, 'WeChat'), notice('loading', 'Loading the accounts…'));
  let accounts = [];
  if (can(session, 'tenant_read')) {
    try {
      accounts = (await api.get('/tenant')).official_accounts;
    } catch (error) {
      replace(container, h('h2', {}, 'WeChat'), notice('error', `Could not load the accounts: ${error.message}`));
      return;
    }
  }
  replace(container, h('h2', {}, 'WeChat'),
    h('section', { class: 'panel', 'aria-label': 'Official accounts' },
      table('Official accounts', [
        { label: 'Name', value: (a) => a.name },
        { label: 'AppID', value: (a) => a.appid },
        { label: 'Secrets set', value: (a) => ['token', 'encoding_aes_key', 'app_secret', 'pay_api_v2_key', 'pay_api_v3_key'].filter((s) => a[`has_${s}`]).join(', ') || 'none' },
      ], accounts, 'No official account is bound yet.')),
    pointsRulesPanel(api, session), qrCodesPanel(api, session, accounts), replyRulesPanel(api), menusPanel(api, accounts));
}

export async function renderOperationLog(container, api) {
  const [userField, user] = field('User', { name: 'username' });
  const outcome = h('select', { id: 'log-outcome', name: 'outcome' },
    ['', 'succeeded', 'refused', 'failed'].map((o) => h('option', { value: o }, o || 'Any')));
  const results = h('div', { 'aria-live': 'polite' });
  const form = h('form', { class: 'inline panel', 'aria-label': 'Filter the operation log' }, userField,
    h('div', { class: 'field' }, h('label', { for: 'log-outcome' }, 'Outcome'), outcome), h('button', { type: 'submit' }, 'Filter'));
  replace(container, h('h2', {}, 'Operation log'), form, results);
  const pages = [];
  async function page(before) {
    replace(results, notice('loading', 'Loading the log…'));
    try {
      const answer = await api.get('/operation-log', { username: user.value.trim(), outcome: outcome.value, before, limit: 50 });
      pages.push(before);
      const more = answer.next_before ? h('button', { type: 'button', class: 'secondary', onclick: () => page(answer.next_before) }, 'Older') : null;
      const back = pages.length > 1 ? h('button', { type: 'button', class: 'secondary', onclick: () => { pages.pop(); page(pages.pop()); } }, 'Newer') : null;
      replace(results, table('Every admin and staff write, newest first', [
        { label: 'When', value: (e) => when(e.at) },
        { label: 'Who', value: (e) => `${e.username} (${e.role})` },
        { label: 'What', value: (e) => `${e.method} ${e.route}` },
        { label: 'Target', value: (e) => e.target },
        { label: 'Status', numeric: true, value: (e) => e.status },
        { label: 'Outcome', value: (e) => e.outcome },
      ], answer.entries, 'No entry matches.'), h('div', { class: 'actions' }, back, more));
    } catch (error) {
      replace(results, notice('error', `Could not load the log: ${error.message}`));
    }
  }
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    pages.length = 0;
    page(null);
  });
  await page(null);
}
