// The reporting dashboard: KPI cards (today vs yesterday, the range vs the one
// before it), daily charts over up to 366 days and a CSV of what is shown.
// Every number comes from GET /reports/daily-ops (the read models).

import { addDays, daysBetween, merchantDay } from '../shared/api.js';
import { h, replace, notice, field, table } from '../shared/dom.js';
import { fenAsDecimal, formatCount, formatFen } from '../shared/money.js';

const RANGE_DAYS_MAX = 366;
const FOLLOW_SOURCES = [
  { dimension: 'scene_qr', label: 'Scene QR' },
  { dimension: 'referral', label: 'Referral' },
  { dimension: 'other', label: 'Other' },
];

const sumOf = (metric, dimension) => (row) => row.metric === metric && (dimension === undefined || row.dimension === dimension);

/** What the dashboard counts per day; `money` values are fen. */
const METRICS = [
  { key: 'follows', label: 'New follows', pick: sumOf('follows') },
  { key: 'unfollows', label: 'Unfollows', pick: sumOf('unfollows') },
  { key: 'net_follows', label: 'Net follows', derive: (d) => d.follows - d.unfollows },
  { key: 'new_members', label: 'New members', pick: sumOf('registrations') },
  { key: 'recharges_fen', label: 'Recharges', money: true, pick: sumOf('cash_credited_fen', 'recharge') },
  { key: 'deposits_fen', label: 'Counter deposits', money: true, pick: sumOf('cash_credited_fen', 'deposit') },
  { key: 'balance_spent_fen', label: 'Balance spent', money: true, pick: sumOf('cash_debited_fen', 'charge') },
  { key: 'points_issued', label: 'Points issued', pick: sumOf('points_granted') },
  { key: 'points_spent', label: 'Points spent', pick: sumOf('points_spent') },
  { key: 'points_expired', label: 'Points expired', pick: sumOf('points_expired') },
  { key: 'coupons_issued', label: 'Coupons issued', pick: sumOf('coupons_issued') },
  { key: 'coupons_redeemed', label: 'Coupons redeemed', pick: sumOf('coupons_redeemed') },
  { key: 'mall_orders_paid', label: 'Mall orders paid', pick: sumOf('mall_orders_paid') },
  { key: 'campaign_participations', label: 'Campaign entries and shakes', pick: sumOf('campaign_participations') },
  { key: 'campaign_winners', label: 'Campaign prizes won', pick: sumOf('campaign_winners') },
];
const BY_KEY = Object.fromEntries(METRICS.map((m) => [m.key, m]));

/** Per day of from..=to: every metric (zero when no row), follows per source, card-level net. */
export function dailySeries(report) {
  const days = [];
  for (let day = report.from; day <= report.to; day = addDays(day, 1)) days.push(day);
  const index = new Map(days.map((day, i) => [day, i]));
  const series = Object.fromEntries(METRICS.map((m) => [m.key, days.map(() => 0)]));
  const followsBySource = Object.fromEntries(FOLLOW_SOURCES.map((s) => [s.dimension, days.map(() => 0)]));
  const cardLevelNet = days.map(() => 0);
  for (const row of report.rows) {
    const i = index.get(row.day);
    if (i === undefined) continue;
    for (const metric of METRICS) {
      // Summed, never assigned: several dimensions of one day add up.
      if (metric.pick && metric.pick(row)) series[metric.key][i] += row.value;
    }
    if (row.metric === 'follows' && followsBySource[row.dimension]) followsBySource[row.dimension][i] += row.value;
    if (row.metric === 'card_level_net') cardLevelNet[i] += row.value;
  }
  for (const metric of METRICS.filter((m) => m.derive)) {
    series[metric.key] = days.map((_, i) => metric.derive(Object.fromEntries(METRICS.filter((m) => m.pick).map((m) => [m.key, series[m.key][i]]))));
  }
  // Members at the end of each day: the total at the end of the range minus the later days' net.
  const membersAtEnd = report.members_by_card_level.reduce((sum, level) => sum + level.members, 0);
  const members = days.map(() => 0);
  let running = membersAtEnd;
  for (let i = days.length - 1; i >= 0; i -= 1) {
    members[i] = running;
    running -= cardLevelNet[i];
  }
  return { days, series, followsBySource, members };
}

const total = (values) => values.reduce((a, b) => a + b, 0);

function format(metric, value) {
  return metric.money ? formatFen(value) : formatCount(value);
}

function delta(current, previous) {
  if (previous === 0) return current === 0 ? { text: '±0%', kind: '' } : { text: 'new', kind: 'delta-up' };
  const percent = Math.round(((current - previous) * 1000) / Math.abs(previous)) / 10;
  return { text: `${percent > 0 ? '+' : ''}${percent}%`, kind: percent > 0 ? 'delta-up' : percent < 0 ? 'delta-down' : '' };
}

function kpiCard(metric, range, previous, today, yesterday) {
  const vsPrevious = delta(range, previous);
  const vsYesterday = delta(today, yesterday);
  return h('section', { class: 'kpi', 'aria-label': metric.label, dataset: { metric: metric.key, range, previous, today, yesterday } },
    h('h3', {}, metric.label),
    h('div', { class: 'value' }, format(metric, range)),
    h('div', { class: 'compare' }, 'Previous range: ', format(metric, previous), ' ', h('span', { class: vsPrevious.kind }, vsPrevious.text)),
    h('div', { class: 'compare' }, 'Today: ', format(metric, today), ' · yesterday: ', format(metric, yesterday), ' ', h('span', { class: vsYesterday.kind }, vsYesterday.text)));
}

const COLOURS = ['#07a35a', '#1a56db', '#d97706', '#b42318', '#7c3aed', '#0e7490'];

function chartPanel(id, title, daysTable) {
  const canvas = h('canvas', { id: `chart-${id}`, role: 'img', 'aria-label': `${title}, by day` });
  const details = h('details', {}, h('summary', {}, `${title} as a table`));
  details.addEventListener('toggle', () => {
    if (details.open && details.children.length === 1) details.append(daysTable());
  }, { once: false });
  return { canvas, panel: h('section', { class: 'chart', 'aria-label': title }, h('h3', {}, title), h('div', { class: 'canvas' }, canvas), details) };
}

function draw(canvas, config) {
  const existing = window.Chart.getChart(canvas);
  if (existing) existing.destroy();
  return new window.Chart(canvas, config);
}

function lineConfig(days, datasets, money) {
  // Whole fen and whole counts only: an empty range would otherwise get ticks of 0.1.
  const tick = (value) => (Number.isInteger(value) ? (money ? formatFen(value) : formatCount(value)) : null);
  return {
    type: 'line',
    data: { labels: days, datasets: datasets.map((d, i) => ({ borderColor: COLOURS[i % COLOURS.length], backgroundColor: COLOURS[i % COLOURS.length], pointRadius: days.length > 60 ? 0 : 2, tension: 0, ...d })) },
    options: {
      animation: false,
      maintainAspectRatio: false,
      interaction: { mode: 'index', intersect: false },
      scales: { y: { beginAtZero: true, ticks: { precision: 0, callback: tick } } },
      plugins: { tooltip: { callbacks: { label: (ctx) => `${ctx.dataset.label}: ${money ? formatFen(ctx.raw) : formatCount(ctx.raw)}` } } },
    },
  };
}

function renderCharts(container, shown) {
  const { days, series, followsBySource, members } = shown;
  const columnsOf = (list) => [{ label: 'Day', value: (i) => days[i] }, ...list.map((c) => ({ label: c.label, numeric: true, value: (i) => c.format(c.values[i]) }))];
  const indexes = days.map((_, i) => i);
  const charts = [];
  const add = (id, title, config, columns) => {
    const { canvas, panel } = chartPanel(id, title, () => table(`${title} by day`, columnsOf(columns), indexes));
    container.append(panel);
    charts.push([canvas, config]);
  };
  const count = (v) => formatCount(v);
  add('follows', 'Follows by source', {
    type: 'bar',
    data: {
      labels: days,
      datasets: [
        ...FOLLOW_SOURCES.map((s, i) => ({ label: s.label, data: followsBySource[s.dimension], backgroundColor: COLOURS[i], stack: 'follows' })),
        { type: 'line', label: 'Net follows', data: series.net_follows, borderColor: COLOURS[3], backgroundColor: COLOURS[3], pointRadius: 0 },
      ],
    },
    options: {
      animation: false,
      maintainAspectRatio: false,
      interaction: { mode: 'index', intersect: false },
      scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true, ticks: { precision: 0 } } },
    },
  }, [...FOLLOW_SOURCES.map((s) => ({ label: s.label, values: followsBySource[s.dimension], format: count })), { label: 'Unfollows', values: series.unfollows, format: count }, { label: 'Net', values: series.net_follows, format: count }]);
  add('members', 'Members', lineConfig(days, [
    { label: 'Members (end of day)', data: members },
    { label: 'New members', data: series.new_members },
  ], false), [{ label: 'Members', values: members, format: count }, { label: 'New', values: series.new_members, format: count }]);
  const money = ['recharges_fen', 'deposits_fen', 'balance_spent_fen'];
  add('money', 'Money', lineConfig(days, money.map((k) => ({ label: BY_KEY[k].label, data: series[k] })), true),
    money.map((k) => ({ label: BY_KEY[k].label, values: series[k], format: formatFen })));
  const points = ['points_issued', 'points_spent', 'points_expired'];
  add('points', 'Points', lineConfig(days, points.map((k) => ({ label: BY_KEY[k].label, data: series[k] })), false),
    points.map((k) => ({ label: BY_KEY[k].label, values: series[k], format: count })));
  const sales = ['coupons_issued', 'coupons_redeemed', 'mall_orders_paid'];
  add('coupons', 'Coupons and mall', lineConfig(days, sales.map((k) => ({ label: BY_KEY[k].label, data: series[k] })), false),
    sales.map((k) => ({ label: BY_KEY[k].label, values: series[k], format: count })));
  const campaigns = ['campaign_participations', 'campaign_winners'];
  add('campaigns', 'Campaigns', lineConfig(days, campaigns.map((k) => ({ label: BY_KEY[k].label, data: series[k] })), false),
    campaigns.map((k) => ({ label: BY_KEY[k].label, values: series[k], format: count })));
  for (const [canvas, config] of charts) draw(canvas, config);
}

/** The CSV of what the dashboard shows: one row per day, money in yuan (exact, from fen). */
export function toCsv(shown) {
  const columns = [
    ...METRICS.map((m) => ({ name: m.money ? m.key.replace(/_fen$/, '_yuan') : m.key, values: shown.series[m.key], money: m.money })),
    ...FOLLOW_SOURCES.map((s) => ({ name: `follows_${s.dimension}`, values: shown.followsBySource[s.dimension] })),
    { name: 'members_end_of_day', values: shown.members },
  ];
  const lines = [['day', ...columns.map((c) => c.name)].join(',')];
  shown.days.forEach((day, i) => lines.push([day, ...columns.map((c) => (c.money ? fenAsDecimal(c.values[i]) : String(c.values[i])))].join(',')));
  return `${lines.join('\n')}\n`;
}

function download(name, text) {
  const url = URL.createObjectURL(new Blob([text], { type: 'text/csv;charset=utf-8' }));
  const link = h('a', { href: url, download: name, hidden: true });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

let range = null;

const DAY = /^\d{4}-\d{2}-\d{2}$/;

/** `rest` may name the range (`#/dashboard/<from>/<to>`), so a view can be linked to. */
export async function renderDashboard(container, api, rest = '') {
  const today = merchantDay();
  const [linkedFrom, linkedTo] = rest.split('/');
  if (DAY.test(linkedFrom ?? '') && DAY.test(linkedTo ?? '')) range = { from: linkedFrom, to: linkedTo };
  range ??= { from: addDays(today, -29), to: today };
  const [fromField, from] = field('From', { type: 'date', name: 'from', value: range.from, required: true });
  const [toField, to] = field('To', { type: 'date', name: 'to', value: range.to, required: true });
  const status = h('div', { 'aria-live': 'polite' });
  const kpis = h('div', { class: 'kpis', id: 'kpis' });
  const charts = h('div', { class: 'charts', id: 'charts' });
  const exportButton = h('button', { type: 'button', class: 'secondary', id: 'export-csv', disabled: true }, 'Export CSV');
  let shown = null;
  const presets = [7, 30, 90, RANGE_DAYS_MAX].map((days) => h('button', {
    type: 'button',
    class: 'secondary',
    onclick: () => {
      to.value = today;
      from.value = addDays(today, 1 - days);
      refresh();
    },
  }, `Last ${days} days`));
  const form = h('form', { class: 'inline panel', 'aria-label': 'Report range' }, fromField, toField, h('button', { type: 'submit' }, 'Show'), ...presets, exportButton);
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    refresh();
  });
  exportButton.addEventListener('click', () => shown && download(`wxcm-dashboard-${shown.days[0]}-${shown.days[shown.days.length - 1]}.csv`, toCsv(shown)));
  replace(container, h('h2', {}, 'Dashboard'), form, status, kpis, charts);

  async function refresh() {
    const days = daysBetween(from.value, to.value);
    if (!from.value || !to.value || !(days >= 1 && days <= RANGE_DAYS_MAX)) {
      replace(status, notice('error', `Choose a range of 1 to ${RANGE_DAYS_MAX} days, "to" on or after "from".`));
      return;
    }
    range = { from: from.value, to: to.value };
    // The address names the range shown (replaceState: no hashchange, no second render).
    history.replaceState(null, '', `#/dashboard/${range.from}/${range.to}`);
    exportButton.disabled = true;
    container.setAttribute('aria-busy', 'true');
    replace(status, notice('loading', 'Loading the report…'));
    try {
      const previousTo = addDays(range.from, -1);
      const [current, previous, recent] = await Promise.all([
        api.get('/reports/daily-ops', range),
        api.get('/reports/daily-ops', { from: addDays(previousTo, 1 - days), to: previousTo }),
        api.get('/reports/daily-ops', { from: addDays(today, -1), to: today }),
      ]);
      shown = dailySeries(current);
      const before = dailySeries(previous);
      const lastTwo = dailySeries(recent);
      replace(kpis,
        h('section', { class: 'kpi', 'aria-label': 'Members', dataset: { metric: 'members', range: shown.members.at(-1), previous: before.members.at(-1), today: lastTwo.members[1], yesterday: lastTwo.members[0] } },
          h('h3', {}, 'Members'),
          h('div', { class: 'value' }, formatCount(shown.members.at(-1))),
          h('div', { class: 'compare' }, 'End of previous range: ', formatCount(before.members.at(-1))),
          h('div', { class: 'compare' }, 'Today: ', formatCount(lastTwo.members[1]), ' · yesterday: ', formatCount(lastTwo.members[0]))),
        METRICS.map((m) => kpiCard(m, total(shown.series[m.key]), total(before.series[m.key]), lastTwo.series[m.key][1], lastTwo.series[m.key][0])));
      replace(charts);
      renderCharts(charts, shown);
      // After the frame with the charts is painted: what `wxcm bench console` measures.
      performance.clearMarks('wxcm:dashboard-painted');
      requestAnimationFrame(() => setTimeout(() => performance.mark('wxcm:dashboard-painted', { detail: days }), 0));
      replace(status, notice('ok', `${range.from} to ${range.to} (${days} days, merchant days UTC+8), compared with the ${days} days before.`));
      exportButton.disabled = false;
    } catch (error) {
      replace(status, notice('error', `Could not load the report: ${error.message}`));
    } finally {
      container.removeAttribute('aria-busy');
    }
  }
  await refresh();
}
