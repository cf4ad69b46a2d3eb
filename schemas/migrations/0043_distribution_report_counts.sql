-- Daily distribution counters (issue 15 item 7).
--
-- The commission, withdrawal and new-distributor counters live in
-- `rm_daily_ops`, fed by the `commissions` and `distributors` projectors (no
-- schema change). Bindings are rows, not events: `/reports/daily-ops` counts
-- them from `distribution_bindings` per merchant day of `bound_at` when asked
-- (an append-only history, so the count never drifts and needs neither a
-- projector nor a rebuild). This index serves that range scan, and the ranks
-- of new subordinates by week or month.

CREATE INDEX distribution_bindings_bound ON distribution_bindings (tenant_id, bound_at);
