-- Helpers shared by the scenarios (included with \i, not echoed). Cumulative statistics are cached
-- for the length of a transaction, so every wait loop clears that snapshot.

-- Waits until pg_stat_archiver reports `segment` (or a later one) archived.
CREATE FUNCTION wait_for_archive(segment text) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    FOR attempt IN 1..900 LOOP
        IF (SELECT last_archived_wal >= segment FROM pg_stat_archiver) THEN RETURN true; END IF;
        PERFORM pg_sleep(0.1);
        PERFORM pg_stat_clear_snapshot();
    END LOOP;
    RETURN false;
END $$;

CREATE TABLE filler (v text);

-- Writes a little WAL, finishes the segment, waits until it is archived; returns its name, or NULL
-- if it was not archived in time.
CREATE FUNCTION next_segment() RETURNS text LANGUAGE plpgsql AS $$
DECLARE segment text;
BEGIN
    INSERT INTO filler SELECT repeat('y', 100) FROM generate_series(1, 1000);
    segment := pg_walfile_name(pg_current_wal_lsn());
    PERFORM pg_switch_wal();
    IF wait_for_archive(segment) THEN RETURN segment; END IF;
    RETURN NULL;
END $$;

-- Waits until backstop.archive_status counts at least `n` failures.
CREATE FUNCTION wait_for_failures(n bigint) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    FOR attempt IN 1..600 LOOP
        IF (SELECT failed_count >= n FROM backstop.archive_status) THEN RETURN true; END IF;
        PERFORM pg_sleep(0.1);
    END LOOP;
    RETURN false;
END $$;

-- Waits until `segment` is no longer waiting in archive_status.
CREATE FUNCTION wait_for_done(segment text) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    FOR attempt IN 1..900 LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_ls_archive_statusdir() WHERE name = segment || '.ready') THEN RETURN true; END IF;
        PERFORM pg_sleep(0.1);
    END LOOP;
    RETURN false;
END $$;

-- Runs `statement` and returns "SQLSTATE: message (hint)" if it fails, NULL if it succeeds; in a
-- subtransaction, so a failure leaves nothing behind. Snapshot ids, cluster identifiers and
-- checksums, which differ on every run, are replaced by placeholders.
CREATE FUNCTION error_of(statement text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE message text; hint text; state text;
BEGIN
    EXECUTE statement;
    RETURN NULL;
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS message = MESSAGE_TEXT, hint = PG_EXCEPTION_HINT, state = RETURNED_SQLSTATE;
    message := state || ': ' || message || coalesce(' (hint: ' || nullif(hint, '') || ')', '');
    message := regexp_replace(message, 'snap_[0-9a-f]{8}', 'snap_<id>', 'g');
    message := regexp_replace(message, '[0-9a-f]{64}', '<sha256>', 'g');
    -- Signing keys differ on every run: key ids (16 hex digits) are masked too.
    message := regexp_replace(message, 'key [0-9a-f]{16}', 'key <key id>', 'g');
    message := regexp_replace(message, 'trusted: [0-9a-f]{16}', 'trusted: <key id>', 'g');
    message := regexp_replace(message, '\m[0-9]{15,20}\M', '<cluster>', 'g');
    message := regexp_replace(message, 's3://[^/]+/', 's3://<bucket>/', 'g');
    RETURN regexp_replace(message, 'file://\S+/repository', 'file://<repository>', 'g');
END $$;

-- The text form of every row of a table, as one checksum: equal for equal contents in any order.
CREATE FUNCTION contents(tbl regclass) RETURNS text LANGUAGE plpgsql AS $$
DECLARE result text;
BEGIN
    EXECUTE format('SELECT count(*) || '' rows, md5 '' || md5(coalesce(string_agg(r, E''\n'' ORDER BY r), ''''))
                      FROM (SELECT t::text AS r FROM %s t) s', tbl) INTO result;
    RETURN result;
END $$;

-- Waits up to `seconds` until `condition` (a boolean SQL expression) holds; returns whether it did.
-- Every check runs with a fresh snapshot, so rows other sessions commit meanwhile are seen.
CREATE FUNCTION wait_until(condition text, seconds int DEFAULT 180) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE ok boolean;
BEGIN
    FOR attempt IN 1..seconds * 5 LOOP
        EXECUTE 'SELECT ' || condition INTO ok;
        IF ok THEN RETURN true; END IF;
        PERFORM pg_sleep(0.2);
        PERFORM pg_stat_clear_snapshot();
    END LOOP;
    RETURN false;
END $$;
