// Money is integer fen everywhere; these turn it into yuan text and back with
// BigInt arithmetic only, so no float ever touches an amount.

const GROUPS = /\B(?=(\d{3})+(?!\d))/g;

/** Digits grouped by thousands: 1234567 → "1,234,567". */
export function formatCount(value) {
  const n = BigInt(value);
  const digits = (n < 0n ? -n : n).toString().replace(GROUPS, ',');
  return n < 0n ? `-${digits}` : digits;
}

/** Integer fen as yuan with two decimals: 123456 → "¥1,234.56", -5 → "-¥0.05". */
export function formatFen(fen) {
  const n = BigInt(fen);
  const abs = n < 0n ? -n : n;
  const yuan = (abs / 100n).toString().replace(GROUPS, ',');
  const cents = (abs % 100n).toString().padStart(2, '0');
  return `${n < 0n ? '-' : ''}¥${yuan}.${cents}`;
}

/** Integer fen as a plain decimal for CSV: 123456 → "1234.56". */
export function fenAsDecimal(fen) {
  const n = BigInt(fen);
  const abs = n < 0n ? -n : n;
  return `${n < 0n ? '-' : ''}${abs / 100n}.${(abs % 100n).toString().padStart(2, '0')}`;
}

/**
 * Typed yuan to integer fen: "12", "12.3", "12.34" → 1200, 1230, 1234.
 * Anything else (more than two decimals, signs, letters, empty) → null.
 */
export function parseYuan(text) {
  const match = /^\s*(\d{1,9})(?:\.(\d{1,2}))?\s*$/.exec(text ?? '');
  if (!match) return null;
  const fen = BigInt(match[1]) * 100n + BigInt((match[2] ?? '').padEnd(2, '0'));
  return fen > BigInt(Number.MAX_SAFE_INTEGER) ? null : Number(fen);
}
