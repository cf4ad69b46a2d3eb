-- Due work that fails is retried with backoff instead of on every scheduler
-- step: a failing item was picked again each second, and enough of them at the
-- head of `due_at` order filled every batch, so nothing behind them ran.
-- `retry_at` (when set) replaces `due_at` as the time the item is next due;
-- `attempts` and `last_error` tell an operator what keeps failing.
--
-- Never edit this file once it has landed: add a new numbered migration instead.

ALTER TABLE due_work
    ADD COLUMN attempts   integer     NOT NULL DEFAULT 0,
    ADD COLUMN retry_at   timestamptz NULL,
    ADD COLUMN last_error text        NULL;

CREATE INDEX due_work_next ON due_work ((coalesce(retry_at, due_at)), id);

GRANT UPDATE (attempts, retry_at, last_error) ON due_work TO wxcm_app;
