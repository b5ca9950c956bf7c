-- The partition of a month is looked up before any lock is taken: once it exists (nearly
-- always), asking for it takes no lock at all, and batches never wait on each other here.
CREATE OR REPLACE FUNCTION confidant_event_partition(at bigint) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    month_start timestamptz := date_trunc('month', to_timestamp(at / 1000.0) AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    month_end   timestamptz := month_start + interval '1 month';
    name        text := 'events_' || to_char(month_start AT TIME ZONE 'UTC', 'YYYY_MM');
BEGIN
    IF to_regclass(name) IS NOT NULL THEN
        RETURN name;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext(name));
    IF to_regclass(name) IS NULL THEN
        EXECUTE format('CREATE TABLE %I PARTITION OF events FOR VALUES FROM (%s) TO (%s)',
                       name,
                       (extract(epoch FROM month_start) * 1000)::bigint,
                       (extract(epoch FROM month_end) * 1000)::bigint);
    END IF;
    RETURN name;
END $$;
