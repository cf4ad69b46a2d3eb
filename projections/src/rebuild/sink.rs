//! Buffered `COPY` of folded rows into the rebuild tables.

use std::fmt::Write as _;

use chrono::{DateTime, SecondsFormat, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::*;

/// Rows waiting for `COPY`, in `COPY`'s text format.
#[derive(Default)]
pub(super) struct Sink {
    members: String,
    members_buffered: usize,
    ledger: String,
    ledger_buffered: usize,
    heads: String,
    /// Head of the member being folded: (event id, recorded at).
    head: Option<(Uuid, DateTime<Utc>)>,
    pub(super) members_written: u64,
    pub(super) ledger_written: u64,
}

impl Sink {
    pub(super) fn fold(
        &mut self,
        current: &mut Option<MemberRow>,
        stored: &StoredMemberEvent,
    ) -> Result<(), RebuildError> {
        let fail = |reason: String| RebuildError::Fold {
            member_id: stored.aggregate_id.clone(),
            sequence: stored.sequence,
            reason,
        };
        let event = stored.decode().map_err(fail)?;
        if let Some(line) = fold_event(current, stored, &event).map_err(fail)? {
            push_ledger(&mut self.ledger, &line);
            self.ledger_buffered += 1;
        }
        self.head = Some((stored.event_id, stored.recorded_at));
        Ok(())
    }

    pub(super) fn finish_member(&mut self, member: Option<MemberRow>) {
        let (Some(member), Some((event_id, recorded_at))) = (member, self.head.take()) else {
            return;
        };
        push_member(&mut self.members, &member);
        self.members_buffered += 1;
        let _ = writeln!(
            self.heads,
            "{}\t{}\t{}\t{event_id}\t{}",
            escape(&member.member_id),
            escape(&member.tenant_id),
            member.version,
            timestamp(recorded_at)
        );
    }

    pub(super) async fn flush_full(&mut self, conn: &mut PgConnection) -> Result<(), sqlx::Error> {
        if self.members_buffered >= COPY_ROWS_MAX || self.ledger_buffered >= COPY_ROWS_MAX {
            self.flush(conn).await?;
        }
        Ok(())
    }

    pub(super) async fn flush(&mut self, conn: &mut PgConnection) -> Result<(), sqlx::Error> {
        copy(conn, &format!("{NEW_MEMBERS} ({MEMBER_COLUMNS})"), &mut self.members).await?;
        copy(conn, &format!("{NEW_LEDGER} ({LEDGER_COLUMNS})"), &mut self.ledger).await?;
        copy(conn, "rebuild_heads (aggregate_id, tenant_id, sequence, event_id, recorded_at)", &mut self.heads).await?;
        self.members_written += self.members_buffered as u64;
        self.ledger_written += self.ledger_buffered as u64;
        self.members_buffered = 0;
        self.ledger_buffered = 0;
        Ok(())
    }
}

pub(super) async fn copy(conn: &mut PgConnection, target: &str, data: &mut String) -> Result<(), sqlx::Error> {
    if data.is_empty() {
        return Ok(());
    }
    let mut copy = conn.copy_in_raw(&format!("COPY {target} FROM STDIN")).await?;
    copy.send(std::mem::take(data).into_bytes()).await?;
    copy.finish().await?;
    Ok(())
}

/// `COPY` text format: backslash escapes for the separators, `\N` for NULL.
pub(super) fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out
}

pub(super) fn nullable(value: Option<&str>) -> String {
    value.map_or_else(|| "\\N".to_owned(), escape)
}

pub(super) fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

pub(super) fn push_member(buf: &mut String, m: &MemberRow) {
    let _ = writeln!(
        buf,
        "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
        escape(&m.tenant_id),
        escape(&m.member_id),
        escape(&m.card_no),
        nullable(m.openid.as_deref()),
        escape(&m.card_level),
        escape(&m.source),
        timestamp(m.registered_at),
        m.points,
        m.held_points,
        m.balance_fen,
        m.lifetime_points,
        m.version,
        if m.followed { "t" } else { "f" },
        nullable(m.follow_source.as_deref()),
        nullable(m.scene.as_deref()),
        nullable(m.referrer_id.as_deref()),
        nullable(m.followed_at.map(timestamp).as_deref()),
        nullable(m.unfollowed_at.map(timestamp).as_deref())
    );
}

pub(super) fn push_ledger(buf: &mut String, l: &LedgerRow) {
    let _ = writeln!(
        buf,
        "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
        escape(&l.tenant_id),
        escape(&l.member_id),
        l.sequence,
        l.event_id,
        escape(&l.event_type),
        timestamp(l.recorded_at),
        l.points_delta,
        l.held_delta,
        l.cash_delta_fen,
        l.points_after,
        l.held_after,
        l.balance_after_fen,
        escape(&l.actor),
        escape(&l.reason),
        nullable(l.reference.as_deref()),
        escape(&l.idempotency_key)
    );
}

// The swap's statements look rows up by primary key (correlated subqueries,
// LATERAL) rather than joining: a bulk-loaded `events` or a fresh checkpoint
// table may have no statistics yet, and a join planned on them can go quadratic.
