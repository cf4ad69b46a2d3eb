//! Text output: tables and findings.

use chrono::SecondsFormat;
use comfy_table::{presets, Cell as TableCell, CellAlignment, Table};

use super::*;

pub(super) fn new_table(header: Vec<&str>) -> Table {
    let mut table = Table::new();
    table.load_preset(presets::UTF8_FULL_CONDENSED).set_header(header);
    table
}

pub(super) fn right(value: impl ToString) -> TableCell {
    TableCell::new(value.to_string()).set_alignment(CellAlignment::Right)
}

pub(super) fn ledger_table(entries: &[LedgerEntry]) -> Table {
    let mut table = new_table(vec![
        "seq",
        "recorded at (UTC)",
        "event",
        "points Δ",
        "held Δ",
        "cash Δ fen",
        "cash Δ yuan",
        "points after",
        "cash after fen / yuan",
        "actor",
        "reason",
    ]);
    for e in entries {
        let cash_after = e.balance_after_fen.map_or_else(String::new, |fen| format!("{fen} / {}", format_yuan(fen)));
        let event_type = if e.decoded { e.event_type.clone() } else { format!("{} (undecodable)", e.event_type) };
        table.add_row(vec![
            right(e.sequence),
            TableCell::new(e.recorded_at.to_rfc3339_opts(SecondsFormat::Micros, true)),
            TableCell::new(event_type),
            right(format_signed(e.points_delta)),
            right(format_signed(e.held_delta)),
            right(format_signed(e.cash_delta_fen)),
            right(&e.cash_delta_yuan),
            right(e.points_after.map_or_else(String::new, |p| p.to_string())),
            right(cash_after),
            TableCell::new(&e.actor),
            TableCell::new(&e.reason),
        ]);
    }
    table
}

pub(super) fn balances_table(b: &Balances) -> Table {
    let mut table = new_table(vec!["recomputed", "value"]);
    let replayed = if b.complete {
        format!("through seq {}", b.replayed_through_sequence)
    } else {
        format!("stopped after seq {} (incomplete)", b.replayed_through_sequence)
    };
    let rows: [(&str, String); 8] = [
        ("replay", replayed),
        ("cash balance", format!("{} fen ({} yuan)", b.balance_fen, b.balance_yuan)),
        ("points", b.points.to_string()),
        ("held points", b.held_points.to_string()),
        ("lifetime points", b.lifetime_points.to_string()),
        ("card level", b.card_level.clone().unwrap_or_else(|| "-".into())),
        ("card number", b.card_no.clone().unwrap_or_else(|| "-".into())),
        ("complete", b.complete.to_string()),
    ];
    for (name, value) in rows {
        table.add_row(vec![TableCell::new(name), TableCell::new(value)]);
    }
    table
}

pub(super) fn print_violations(violations: &[Violation]) {
    if violations.is_empty() {
        return;
    }
    println!("violations:");
    for v in violations {
        println!("  {v}");
    }
}

// ---------------------------------------------------------------------------------
// audit verify
// ---------------------------------------------------------------------------------
