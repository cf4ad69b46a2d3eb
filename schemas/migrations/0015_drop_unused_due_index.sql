-- The scheduler reads due work by coalesce(retry_at, due_at) since 0013
-- (index due_work_next); the index on (due_at, id) from 0002 no longer serves
-- any query and cost every insert into due_work a btree entry.
--
-- Never edit this file once it has landed: add a new numbered migration instead.

DROP INDEX IF EXISTS due_work_due;
