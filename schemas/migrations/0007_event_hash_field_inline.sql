-- Performance: the hash-field helper of 0001 was a plpgsql-called SQL function
-- with SET search_path and a STABLE call inside an IMMUTABLE declaration, so
-- Postgres re-parsed and re-planned it on every call (a third of backend CPU
-- per event insert). Same bytes, now inlinable: every name is
-- schema-qualified, so no search_path pinning is needed.
CREATE OR REPLACE FUNCTION event_hash_field(s text) RETURNS bytea
    LANGUAGE sql STABLE STRICT PARALLEL SAFE
AS $$ SELECT pg_catalog.int4send(pg_catalog.octet_length(pg_catalog.convert_to(s, 'UTF8')))
             OPERATOR(pg_catalog.||) pg_catalog.convert_to(s, 'UTF8') $$;
