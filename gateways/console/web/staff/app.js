// The staff console (phone width): find a member by card number or card QR,
// deposit and charge cash after a confirmation showing the balance after,
// hand over the member's physical campaign prizes, write a coupon off, hand
// a mall order over. Every write carries one
// Idempotency-Key per intent, so a double tap or a retry never books twice.

import { Api, newKey } from '../shared/api.js';
import { h, replace, notice, field, when } from '../shared/dom.js';
import { formatCount, formatFen, parseYuan } from '../shared/money.js';
import { consoleSession } from '../shared/session.js';

const api = new Api('wxcm.staff.token');
const content = document.getElementById('content');
let session = null;
let member = null;

const can = (permission) => session?.permissions.includes(permission);
const STORE_KEY = 'wxcm.staff.store';


function memberCard() {
  if (!member) return notice('empty', 'No member selected.');
  const item = (label, value, id) => [h('dt', {}, label), h('dd', { id }, value)];
  return h('dl', { class: 'card-summary', id: 'member-card' },
    item('Card number', member.card_no, 'member-card-no'),
    item('Card level', member.card_level),
    item('Balance', formatFen(member.balance_fen), 'member-balance'),
    item('Spendable points', formatCount(member.spendable_points), 'member-points'));
}

/** Looks a member up by a typed card number or a scanned card QR payload. */
async function lookup(code) {
  const text = code.trim();
  if (text.startsWith('wxcm:card:')) return api.call('/members/card-code-lookups', { method: 'POST', body: { code: text } });
  if (!/^\d{10}$/.test(text)) throw new Error('a card number has 10 digits (or scan the member’s card QR)');
  return api.get(`/members/by-card/${text}`);
}

/** Camera scanning where the browser has a QR detector; typing always works. */
function scanner(input, onCode) {
  if (!('BarcodeDetector' in window) || !navigator.mediaDevices?.getUserMedia) return null;
  const video = h('video', { class: 'scanner', playsinline: true, muted: true, hidden: true, 'aria-label': 'Camera' });
  const button = h('button', { type: 'button', class: 'secondary' }, 'Scan with camera');
  let stream = null;
  const stop = () => {
    stream?.getTracks().forEach((t) => t.stop());
    stream = null;
    video.hidden = true;
    button.textContent = 'Scan with camera';
  };
  button.addEventListener('click', async () => {
    if (stream) return stop();
    try {
      const detector = new window.BarcodeDetector({ formats: ['qr_code'] });
      stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: 'environment' } });
      video.srcObject = stream;
      video.hidden = false;
      button.textContent = 'Stop camera';
      await video.play();
      const tick = async () => {
        if (!stream) return;
        const codes = await detector.detect(video).catch(() => []);
        if (codes.length > 0) {
          input.value = codes[0].rawValue;
          stop();
          onCode();
        } else {
          requestAnimationFrame(tick);
        }
      };
      tick();
    } catch (error) {
      stop();
      input.focus();
      button.after(notice('error', `No camera (${error.message}); type the number instead.`));
    }
  });
  return h('div', {}, button, video);
}

function lookupPanel(onFound) {
  const [codeField, code] = field('Card number or card QR', { name: 'card', inputmode: 'numeric', autocomplete: 'off', required: true, placeholder: '10-digit card number' });
  const status = h('div', { 'aria-live': 'polite' });
  const submit = h('button', { type: 'submit' }, 'Find member');
  const form = h('form', { class: 'panel', 'aria-labelledby': 'lookup-title' }, h('h2', { id: 'lookup-title' }, 'Find a member'), codeField);
  const run = async () => {
    replace(status, notice('loading', 'Looking up…'));
    try {
      member = await lookup(code.value);
      replace(status);
      onFound();
    } catch (error) {
      member = null;
      replace(status, notice('error', error.status === 404 ? 'No member with this card.' : error.message));
      onFound();
    }
  };
  form.append(scanner(code, run) ?? '', submit, status);
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    run();
  });
  return form;
}

/**
 * Deposit or charge: amount and reason, then a confirmation with the balance
 * after; one Idempotency-Key from the confirmation until it succeeds.
 */
function cashPanel(kind, refresh) {
  const deposit = kind === 'deposit';
  const title = deposit ? 'Deposit cash' : 'Charge balance';
  const [amountField, amount] = field('Amount (yuan)', { name: `${kind}-amount`, inputmode: 'decimal', autocomplete: 'off', required: true, placeholder: '0.00' });
  const [reasonField, reason] = field('Reason', { name: `${kind}-reason`, required: true, maxlength: 200, value: deposit ? 'Counter deposit' : 'Counter purchase' });
  const [referenceField, reference] = field('Receipt number (optional)', { name: `${kind}-reference`, maxlength: 200 });
  const status = h('div', { 'aria-live': 'polite' });
  const confirm = h('div', {});
  const form = h('form', { class: 'panel', 'aria-labelledby': `${kind}-title` }, h('h2', { id: `${kind}-title` }, title),
    amountField, reasonField, referenceField, h('button', { type: 'submit' }, deposit ? 'Review deposit' : 'Review charge'), confirm, status);
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    replace(status);
    const fen = parseYuan(amount.value);
    if (fen === null || fen <= 0) {
      replace(status, notice('error', 'Enter an amount in yuan, e.g. 25 or 25.50.'));
      amount.focus();
      return;
    }
    const after = deposit ? member.balance_fen + fen : member.balance_fen - fen;
    if (after < 0) {
      replace(status, notice('error', `The balance is ${formatFen(member.balance_fen)}: it cannot pay ${formatFen(fen)}.`));
      return;
    }
    const key = newKey();
    const yes = h('button', { type: 'button', id: `${kind}-confirm` }, deposit ? 'Confirm deposit' : 'Confirm charge');
    const no = h('button', { type: 'button', class: 'secondary' }, 'Cancel');
    replace(confirm, h('div', { class: 'panel confirm', role: 'group', 'aria-label': 'Confirm' },
      h('p', { id: `${kind}-summary` }, `${deposit ? 'Deposit' : 'Charge'} ${formatFen(fen)} ${deposit ? 'to' : 'from'} card ${member.card_no}. Balance after: ${formatFen(after)}.`),
      h('div', { class: 'actions' }, yes, no)));
    yes.focus();
    no.addEventListener('click', () => replace(confirm));
    yes.addEventListener('click', async () => {
      yes.disabled = true;
      replace(status, notice('loading', 'Booking…'));
      try {
        const body = { amount_fen: fen, reason: reason.value.trim() };
        if (reference.value.trim()) body.reference = reference.value.trim();
        const answer = await api.write('POST', `/members/${member.member_id}/cash/${deposit ? 'deposits' : 'charges'}`, body, key);
        member = answer.member;
        replace(confirm);
        amount.value = '';
        reference.value = '';
        refresh();
        replace(status, notice('ok', `${deposit ? 'Deposited' : 'Charged'} ${formatFen(fen)}. Balance now ${formatFen(member.balance_fen)}.`));
      } catch (error) {
        // The same key goes again on a retry: a booking that did land is not repeated.
        yes.disabled = false;
        replace(status, notice('error', `Not booked: ${error.message}`));
      }
    });
  });
  return form;
}

/** One key per award for the whole visit: a double tap or a retry hands over once. */
const handOverKeys = new Map();

/**
 * The member's physical campaign prizes waiting at the store, each with a
 * hand-over button; a handed-over prize leaves the list.
 */
function prizesPanel() {
  const list = h('div', { id: 'prizes-list', 'aria-live': 'polite' });
  const status = h('div', { 'aria-live': 'polite' });
  const panel = h('section', { class: 'panel', 'aria-labelledby': 'prizes-title' }, h('h2', { id: 'prizes-title' }, 'Campaign prizes'), list, status);
  const forMember = member.member_id;
  const show = async () => {
    replace(list, notice('loading', 'Loading prizes…'));
    try {
      const answer = await api.get(`/members/${forMember}/campaign-prizes`, { state: 'waiting' });
      if (member?.member_id !== forMember) return;
      if (answer.prizes.length === 0) return replace(list, notice('empty', 'No prize waiting for this member.'));
      replace(list, h('ul', { class: 'prizes' }, answer.prizes.map((prize) => {
        const id = `${prize.campaign_id}/${JSON.stringify(prize.award)}`;
        const button = h('button', { type: 'button', class: 'hand-over', dataset: { item: prize.item } }, 'Hand over');
        button.addEventListener('click', async () => {
          if (!handOverKeys.has(id)) handOverKeys.set(id, newKey());
          button.disabled = true;
          replace(status, notice('loading', 'Handing over…'));
          try {
            await api.write('POST', `/campaigns/${prize.campaign_id}/hand-overs`, { award: prize.award }, handOverKeys.get(id));
            replace(status, notice('ok', `Handed over: ${prize.item} (${prize.campaign_name}).`));
            show();
          } catch (error) {
            button.disabled = false;
            replace(status, notice('error', `Not handed over: ${error.message}`));
          }
        });
        return h('li', { class: 'prize' }, h('span', {}, h('strong', {}, prize.item), ` — ${prize.campaign_name}, won ${when(prize.won_at)}`), ' ', button);
      })));
    } catch (error) {
      replace(list, notice('error', `Could not load prizes: ${error.message}`));
    }
  };
  show();
  return panel;
}

function storeField() {
  const [storeField, store] = field('Store', { name: 'store', maxlength: 200, value: localStorage.getItem(STORE_KEY) ?? '' });
  store.addEventListener('change', () => localStorage.setItem(STORE_KEY, store.value.trim()));
  return [storeField, store];
}

function couponPanel() {
  const [codeField, code] = field('Coupon code or QR', { name: 'coupon', autocomplete: 'off', required: true, maxlength: 80 });
  const [storeWrap, store] = storeField();
  const status = h('div', { 'aria-live': 'polite' });
  const form = h('form', { class: 'panel', 'aria-labelledby': 'coupon-title' }, h('h2', { id: 'coupon-title' }, 'Write a coupon off'), codeField, storeWrap, h('button', { type: 'submit' }, 'Write off'), status);
  let key = newKey();
  let lastCode = '';
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    if (code.value.trim() !== lastCode) key = newKey();
    lastCode = code.value.trim();
    replace(status, notice('loading', 'Writing off…'));
    try {
      const body = { code: lastCode };
      if (store.value.trim()) body.store = store.value.trim();
      const coupon = await api.write('POST', '/coupons/redemptions', body, key);
      replace(status, notice('ok', `Written off: ${coupon.name} (serial ${coupon.serial}).`));
      code.value = '';
      lastCode = '';
    } catch (error) {
      replace(status, notice('error', `Not written off: ${error.message}`));
    }
  });
  return form;
}

function deliveryPanel() {
  const [orderField, order] = field('Order QR, number or id', { name: 'order', autocomplete: 'off', required: true, maxlength: 200 });
  const [storeWrap, store] = storeField();
  const status = h('div', { 'aria-live': 'polite' });
  const form = h('form', { class: 'panel', 'aria-labelledby': 'delivery-title' }, h('h2', { id: 'delivery-title' }, 'Hand an order over'), orderField, storeWrap, h('button', { type: 'submit' }, 'Deliver'), status);
  let key = newKey();
  let lastOrder = '';
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    if (!store.value.trim()) {
      replace(status, notice('error', 'Name the store handing the goods over.'));
      store.focus();
      return;
    }
    if (order.value.trim() !== lastOrder) key = newKey();
    lastOrder = order.value.trim();
    replace(status, notice('loading', 'Delivering…'));
    try {
      const answer = await api.write('POST', '/mall/deliveries', { order: lastOrder, store: store.value.trim() }, key);
      replace(status, notice('ok', `Delivered order ${answer.order_no}: ${answer.product_name} × ${answer.quantity}.`));
      order.value = '';
      lastOrder = '';
    } catch (error) {
      replace(status, notice('error', `Not delivered: ${error.message}`));
    }
  });
  return form;
}

function render() {
  const cardPanel = h('section', { class: 'panel', 'aria-label': 'Member', 'aria-live': 'polite' });
  const refresh = () => replace(cardPanel, h('h2', {}, 'Member'), memberCard());
  const memberTools = h('div', {});
  const showMemberTools = () => {
    refresh();
    replace(memberTools, member && can('campaign_read') && can('campaign_hand_over') ? prizesPanel() : null,
      member && can('cash_deposit') ? cashPanel('deposit', refresh) : null, member && can('cash_charge') ? cashPanel('charge', refresh) : null);
  };
  replace(content,
    can('member_read') ? lookupPanel(showMemberTools) : notice('error', 'Your role cannot look members up.'),
    cardPanel, memberTools,
    can('coupon_redeem') ? couponPanel() : null,
    can('mall_deliver') ? deliveryPanel() : null);
  refresh();
}

const start = consoleSession({
  api,
  tenantKey: 'wxcm.staff.tenant',
  content,
  onSession: (s) => {
    session = s;
    render();
  },
  onSignedOut: () => {
    session = null;
    member = null;
  },
});
start();
