// A small element builder: text goes in as text nodes, never as HTML, so
// nothing a member or an API returns can inject markup.

/** h('p', {class: 'x', onclick: fn}, 'text', child) */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs ?? {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith('on') && typeof value === 'function') {
      el.addEventListener(name.slice(2), value);
    } else if (name === 'dataset') {
      Object.assign(el.dataset, value);
    } else {
      el.setAttribute(name, value === true ? '' : String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replaces an element's children. */
export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** A polite status line: role=status for progress, role=alert for errors. */
export function notice(kind, text) {
  return h('p', { class: `notice notice-${kind}`, role: kind === 'error' ? 'alert' : 'status' }, text);
}

/** "Loading…" while a promise runs, then what render returns, or the error. */
export async function load(container, what, task, render) {
  replace(container, notice('loading', `Loading ${what}…`));
  container.setAttribute('aria-busy', 'true');
  try {
    const value = await task();
    replace(container, render(value));
  } catch (error) {
    replace(container, notice('error', `Could not load ${what}: ${error.message}`));
  } finally {
    container.removeAttribute('aria-busy');
  }
}

/** A table from column specs [{label, value: row => text|Node, numeric}] and rows. */
export function table(caption, columns, rows, empty = 'Nothing yet.') {
  if (rows.length === 0) return notice('empty', empty);
  return h('div', { class: 'table-scroll' },
    h('table', {},
      h('caption', {}, caption),
      h('thead', {}, h('tr', {}, columns.map((c) => h('th', { scope: 'col', class: c.numeric ? 'num' : null }, c.label)))),
      h('tbody', {}, rows.map((row) => h('tr', {}, columns.map((c) => h('td', { class: c.numeric ? 'num' : null }, c.value(row))))))));
}

/** A labelled input: returns [wrapper, input]. */
export function field(label, attrs) {
  const id = attrs.id ?? `f-${Math.random().toString(36).slice(2, 10)}`;
  const input = h(attrs.tag ?? 'input', { ...attrs, id, tag: null });
  return [h('div', { class: 'field' }, h('label', { for: id }, label), input), input];
}

/** Local date-time of an ISO instant, or ''. */
export function when(iso) {
  return iso ? new Date(iso).toLocaleString() : '';
}
