-- PolicyGate: shared rate-limit and concurrency counters.
--
-- Several processes gate requests (per "key": a tenant, an API key, a model ...) against
-- per-minute / per-hour / per-day caps on requests and tokens, and against a cap on requests
-- in flight. This schema holds the shared state so that all those processes see one budget.
--
--   * Each gated key has a row in policygate.keys; its row lock (SELECT ... FOR UPDATE) is the
--     only serialization point: admissions of one key run one at a time, different keys never
--     wait for each other. No table locks are taken anywhere.
--   * Usage is kept as sliding windows of 61 buckets (window length / 60 wide), in
--     policygate.usage, one row per (key, window, bucket).
--   * In-flight requests hold a lease (policygate.leases) that the holder renews; a lease that
--     is not renewed expires, so a crashed process cannot keep a slot forever.
--   * policygate.admissions is the audit log of every admission (when, how many tokens, who,
--     when released or when its lease was lost).
--
-- The application calls the functions below, each as a single statement
-- (SELECT * FROM policygate.f(...)), under READ COMMITTED (admit() must see what the previous
-- holder of the key's lock committed, so each statement needs a fresh snapshot). All times come from the database
-- clock (clock_timestamp(), never now(): now() is the transaction start, which can be before the
-- key's row lock was obtained), as integer microseconds since the Unix epoch.
--
-- Windows: 0 = minute, 1 = hour, 2 = day. Bucket width: 1 s, 1 min, 24 min. The head bucket of
-- window w at time t is t / width(w); the live buckets are head - 60 .. head.
--
-- admit, commit, release and renew run with SET enable_seqscan = off. They touch a few rows
-- by key or id, and PL/pgSQL caches their plans per connection: a plan made while a table looked
-- empty (e.g. just after autovacuum found it empty, as happens to leases) would otherwise keep
-- seq-scanning that table as it grows, until the next analyze (measured: 3.5x slower admit).
--
-- Lock order, to stay free of deadlocks: keys row -> leases rows -> admissions row -> usage rows.
-- policygate.cleanup() skips locked leases and keys instead of waiting for them, and deletes idle
-- keys last, just before it commits.
--
-- This file runs inside the application's migration transaction; the application records the
-- version in policygate.schema_migrations itself.

CREATE SCHEMA IF NOT EXISTS policygate;

-- ---------------------------------------------------------------------------------------------
-- Helpers
-- ---------------------------------------------------------------------------------------------

-- Current database time in microseconds since the Unix epoch. VOLATILE on purpose: it must be
-- read again at each call (clock_timestamp() moves during a transaction).
CREATE FUNCTION policygate.now_us() RETURNS bigint
LANGUAGE sql VOLATILE PARALLEL SAFE
AS $$ SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint $$;

-- Bucket width in microseconds of window w (0 = minute, 1 = hour, 2 = day): window length / 60.
-- Not STRICT, so that the planner can inline it (and fold it to a constant for a constant w).
CREATE FUNCTION policygate.bucket_width_us(w integer) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT (ARRAY[1000000, 60000000, 1440000000]::bigint[])[w + 1] $$;

-- ---------------------------------------------------------------------------------------------
-- Tables
-- ---------------------------------------------------------------------------------------------

-- One row per gated key. It carries no data: its row lock serializes the admissions of the key.
-- Created on first use by admit(); removed by cleanup() once the key has no state left.
CREATE TABLE policygate.keys (
    key text PRIMARY KEY
);
COMMENT ON TABLE policygate.keys IS
    'One row per gated key; its row lock serializes admissions of that key.';

-- Requests and tokens counted per bucket of each window. Only windows the caller caps are
-- counted. Rows are updated in place on every admission (fillfactor leaves room for HOT updates).
CREATE TABLE policygate.usage (
    key      text     NOT NULL,
    win      smallint NOT NULL CHECK (win BETWEEN 0 AND 2),  -- 0 minute, 1 hour, 2 day
    bucket   bigint   NOT NULL,                              -- time_us / bucket_width_us(win)
    requests bigint   NOT NULL,
    tokens   bigint   NOT NULL,
    PRIMARY KEY (key, win, bucket)                           -- admit(): sum of a key's live buckets
) WITH (fillfactor = 70);
-- cleanup(): find the buckets that have left their ring, without scanning every key.
CREATE INDEX usage_win_bucket_idx ON policygate.usage (win, bucket);
COMMENT ON TABLE policygate.usage IS
    'Requests and tokens per (key, window, bucket); a window is the sum of its 61 live buckets.';

-- Audit log of admissions, and what commit() needs to correct the token estimate later.
-- Kept two days after the admission ended (released or lease lost).
CREATE TABLE policygate.admissions (
    id            bigserial PRIMARY KEY,
    key           text     NOT NULL,
    admitted_us   bigint   NOT NULL,
    tokens        bigint   NOT NULL,  -- the estimate at admission, then the committed count
    windows       smallint NOT NULL,  -- bit w set: counted in window w (so commit() can correct it)
    holder        text,               -- which process was admitted
    released_us   bigint,             -- release() time
    lease_lost_us bigint              -- the lease expired unreleased (crashed or stuck holder)
) WITH (fillfactor = 80);
-- cleanup(): a key without admissions left can go; and reading one key's history.
CREATE INDEX admissions_key_idx ON policygate.admissions (key, admitted_us);
-- cleanup(): old admissions.
CREATE INDEX admissions_admitted_idx ON policygate.admissions (admitted_us);
COMMENT ON TABLE policygate.admissions IS
    'Audit log of admissions (admission, release, lease-loss times; token count).';

-- Concurrency slots in use: one lease per admission not yet released. A lease counts while
-- expires_us > now; its holder renews it; an expired lease is never revived.
CREATE TABLE policygate.leases (
    admission_id bigint PRIMARY KEY,  -- policygate.admissions.id
    key          text   NOT NULL,
    expires_us   bigint NOT NULL
);
-- admit(): count a key's live leases and drop its expired ones.
CREATE INDEX leases_key_expires_idx ON policygate.leases (key, expires_us);
COMMENT ON TABLE policygate.leases IS
    'Concurrency slots held: one lease per unreleased admission, live while expires_us > now.';

-- No foreign keys between these tables on purpose: each would add a lookup and a row lock to
-- every insert on the hot path; the functions below keep the rows consistent, and every row
-- ages out on its own in cleanup().

-- ---------------------------------------------------------------------------------------------
-- admit: the hot path. Decide one request for p_key and, if admitted, count it.
--
-- Caps are per call: p_request_caps[w + 1] / p_token_caps[w + 1] for window w, NULL = no cap.
-- A window is tracked (checked and counted) when either of its caps is set.
-- p_max_concurrent NULL = no concurrency cap (a lease is taken anyway, for release()).
--
-- Returns one row:
--   admitted   : admission_id, now_us                       (other columns NULL)
--   refused_by = 'concurrency' : now_us, lease_expiry_us = first expiry among the live leases
--   refused_by = 'window'      : now_us and the live, non-empty buckets of all tracked windows as
--                                parallel arrays wins/buckets/requests/tokens, ordered by window
--                                then bucket (empty arrays if there are none)
-- ---------------------------------------------------------------------------------------------
CREATE FUNCTION policygate.admit(
    p_key            text,
    p_tokens         bigint,
    p_request_caps   bigint[],
    p_token_caps     bigint[],
    p_max_concurrent integer,
    p_lease_us       bigint,
    p_holder         text)
RETURNS TABLE (
    admitted        boolean,
    admission_id    bigint,
    now_us          bigint,
    refused_by      text,
    lease_expiry_us bigint,
    wins            smallint[],
    buckets         bigint[],
    requests        bigint[],
    tokens          bigint[])
LANGUAGE plpgsql VOLATILE
SET enable_seqscan = off  -- see the header
AS $$
#variable_conflict use_column
DECLARE
    v_now     bigint;
    v_h0      bigint;          -- head bucket of each tracked window; NULL = window not tracked
    v_h1      bigint;
    v_h2      bigint;
    v_mask    smallint := 0;   -- bit w set: window w tracked
    v_live    bigint;
    v_first   bigint;
    v_expired bigint;
    v_req0    bigint;
    v_tok0    bigint;
    v_req1    bigint;
    v_tok1    bigint;
    v_req2    bigint;
    v_tok2    bigint;
    v_id      bigint;
BEGIN
    IF p_key IS NULL OR p_tokens IS NULL OR p_tokens < 0 OR p_lease_us IS NULL OR p_lease_us <= 0 THEN
        RAISE EXCEPTION 'policygate.admit: key and tokens >= 0 and lease_us > 0 are required'
            USING ERRCODE = '22023';
    END IF;
    -- Under REPEATABLE READ / SERIALIZABLE the snapshot would predate the key lock and miss the
    -- usage just committed by the previous admission of the key: refuse rather than over-admit.
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'policygate.admit must run under READ COMMITTED, not %',
            current_setting('transaction_isolation') USING ERRCODE = '25000';
    END IF;

    -- Lock the key row; create it on first use only (no INSERT on the common path). Loops in
    -- the rare case cleanup() deletes the row while we wait for it.
    LOOP
        PERFORM 1 FROM policygate.keys k WHERE k.key = p_key FOR UPDATE;
        EXIT WHEN FOUND;
        INSERT INTO policygate.keys (key) VALUES (p_key) ON CONFLICT DO NOTHING;
    END LOOP;

    -- Leases of the key: live count, first live expiry, and whether any have expired. The time
    -- is read after the lock and inside this statement, after its snapshot was taken: a lease
    -- it does not see was released (release() stamps released_us before deleting) before this
    -- instant, so the admissions log never shows a slot used twice.
    SELECT n.t,
           count(l.admission_id) FILTER (WHERE l.expires_us > n.t),
           min(l.expires_us) FILTER (WHERE l.expires_us > n.t),
           count(l.admission_id) FILTER (WHERE l.expires_us <= n.t)
      INTO v_now, v_live, v_first, v_expired
      FROM (SELECT policygate.now_us() AS t) n
      LEFT JOIN policygate.leases l ON l.key = p_key
     GROUP BY n.t;
    now_us := v_now;

    -- Expired leases: their holders crashed or stalled. Drop them and record the loss. Rows that
    -- cleanup() is deleting right now are skipped rather than waited for.
    IF v_expired > 0 THEN
        WITH gone AS (
            DELETE FROM policygate.leases l
             WHERE l.admission_id IN (SELECT x.admission_id FROM policygate.leases x
                                       WHERE x.key = p_key AND x.expires_us <= v_now
                                         FOR UPDATE SKIP LOCKED)
            RETURNING l.admission_id, l.expires_us)
        UPDATE policygate.admissions a
           SET lease_lost_us = g.expires_us
          FROM gone g
         WHERE a.id = g.admission_id AND a.released_us IS NULL;
    END IF;

    -- Concurrency first.
    IF p_max_concurrent IS NOT NULL AND v_live >= p_max_concurrent THEN
        admitted := false;
        refused_by := 'concurrency';
        lease_expiry_us := v_first;
        RETURN NEXT;
        RETURN;
    END IF;

    -- Tracked windows and their head buckets.
    IF p_request_caps[1] IS NOT NULL OR p_token_caps[1] IS NOT NULL THEN
        v_h0 := v_now / policygate.bucket_width_us(0);
        v_mask := v_mask | 1;
    END IF;
    IF p_request_caps[2] IS NOT NULL OR p_token_caps[2] IS NOT NULL THEN
        v_h1 := v_now / policygate.bucket_width_us(1);
        v_mask := v_mask | 2;
    END IF;
    IF p_request_caps[3] IS NOT NULL OR p_token_caps[3] IS NOT NULL THEN
        v_h2 := v_now / policygate.bucket_width_us(2);
        v_mask := v_mask | 4;
    END IF;

    IF v_mask <> 0 THEN
        -- Usage of each tracked window: the sum of its live buckets. (Written with plain
        -- parameters, no set-returning function, so that its cached generic plan gets used
        -- instead of being planned again at every call.)
        SELECT coalesce(sum(u.requests) FILTER (WHERE u.win = 0), 0),
               coalesce(sum(u.tokens)   FILTER (WHERE u.win = 0), 0),
               coalesce(sum(u.requests) FILTER (WHERE u.win = 1), 0),
               coalesce(sum(u.tokens)   FILTER (WHERE u.win = 1), 0),
               coalesce(sum(u.requests) FILTER (WHERE u.win = 2), 0),
               coalesce(sum(u.tokens)   FILTER (WHERE u.win = 2), 0)
          INTO v_req0, v_tok0, v_req1, v_tok1, v_req2, v_tok2
          FROM policygate.usage u
         WHERE u.key = p_key
           AND (   (u.win = 0 AND u.bucket BETWEEN v_h0 - 60 AND v_h0)
                OR (u.win = 1 AND u.bucket BETWEEN v_h1 - 60 AND v_h1)
                OR (u.win = 2 AND u.bucket BETWEEN v_h2 - 60 AND v_h2));

        -- A NULL cap compares as NULL, i.e. never refuses.
        IF coalesce(   v_req0 + 1        > p_request_caps[1]
                    OR v_tok0 + p_tokens > p_token_caps[1]
                    OR v_req1 + 1        > p_request_caps[2]
                    OR v_tok1 + p_tokens > p_token_caps[2]
                    OR v_req2 + 1        > p_request_caps[3]
                    OR v_tok2 + p_tokens > p_token_caps[3], false) THEN
            admitted := false;
            refused_by := 'window';
            SELECT coalesce(array_agg(u.win      ORDER BY u.win, u.bucket), '{}'),
                   coalesce(array_agg(u.bucket   ORDER BY u.win, u.bucket), '{}'),
                   coalesce(array_agg(u.requests ORDER BY u.win, u.bucket), '{}'),
                   coalesce(array_agg(u.tokens   ORDER BY u.win, u.bucket), '{}')
              INTO wins, buckets, requests, tokens
              FROM policygate.usage u
             WHERE u.key = p_key
               AND (   (u.win = 0 AND u.bucket BETWEEN v_h0 - 60 AND v_h0)
                    OR (u.win = 1 AND u.bucket BETWEEN v_h1 - 60 AND v_h1)
                    OR (u.win = 2 AND u.bucket BETWEEN v_h2 - 60 AND v_h2))
               AND (u.requests <> 0 OR u.tokens <> 0);
            RETURN NEXT;
            RETURN;
        END IF;

        -- Count the request in the head bucket of each tracked window.
        INSERT INTO policygate.usage AS u (key, win, bucket, requests, tokens)
        SELECT p_key, w.win, w.head, 1, p_tokens
          FROM (VALUES (0::smallint, v_h0), (1::smallint, v_h1), (2::smallint, v_h2)) AS w(win, head)
         WHERE w.head IS NOT NULL
        ON CONFLICT (key, win, bucket)
        DO UPDATE SET requests = u.requests + 1, tokens = u.tokens + EXCLUDED.tokens;
    END IF;

    INSERT INTO policygate.admissions (key, admitted_us, tokens, windows, holder)
    VALUES (p_key, v_now, p_tokens, v_mask, p_holder)
    RETURNING id INTO v_id;

    INSERT INTO policygate.leases (admission_id, key, expires_us)
    VALUES (v_id, p_key, v_now + p_lease_us);

    admitted := true;
    admission_id := v_id;
    RETURN NEXT;
END
$$;

-- ---------------------------------------------------------------------------------------------
-- commit: replace an admission's token estimate by the real count, in the buckets it was
-- counted in (those that still exist). Idempotent: applies p_tokens - (count recorded so far),
-- so a retried call adds nothing. Returns that delta, or NULL for an unknown admission (it may
-- have been cleaned up). A decrease frees budget: waiters are woken with NOTIFY policygate, key.
-- ---------------------------------------------------------------------------------------------
CREATE FUNCTION policygate.commit(p_admission_id bigint, p_tokens bigint)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET enable_seqscan = off  -- see the header
AS $$
DECLARE
    v_key      text;
    v_admitted bigint;
    v_tokens   bigint;
    v_windows  smallint;
    v_delta    bigint;
BEGIN
    IF p_tokens IS NULL OR p_tokens < 0 THEN
        RAISE EXCEPTION 'policygate.commit: tokens >= 0 is required' USING ERRCODE = '22023';
    END IF;

    SELECT a.key INTO v_key FROM policygate.admissions a WHERE a.id = p_admission_id;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;

    -- Same order as admit(): the key row first (admit reads usage under it), then the admission.
    PERFORM 1 FROM policygate.keys k WHERE k.key = v_key FOR UPDATE;
    SELECT a.admitted_us, a.tokens, a.windows
      INTO v_admitted, v_tokens, v_windows
      FROM policygate.admissions a
     WHERE a.id = p_admission_id
       FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;  -- deleted by cleanup() meanwhile
    END IF;

    v_delta := p_tokens - v_tokens;
    IF v_delta <> 0 THEN
        UPDATE policygate.usage u
           SET tokens = u.tokens + v_delta
          FROM generate_series(0, 2) AS w(win)
         WHERE v_windows & (1 << w.win) <> 0
           AND u.key = v_key
           AND u.win = w.win
           AND u.bucket = v_admitted / policygate.bucket_width_us(w.win);

        UPDATE policygate.admissions a SET tokens = p_tokens WHERE a.id = p_admission_id;

        IF v_delta < 0 THEN
            PERFORM pg_notify('policygate', v_key);
        END IF;
    END IF;
    RETURN v_delta;
END
$$;

-- ---------------------------------------------------------------------------------------------
-- release: the request has finished; free its concurrency slot. Idempotent. Returns whether a
-- lease was deleted (false if already released, expired and cleaned up, or unknown); if one was,
-- waiters are woken with NOTIFY policygate, key.
-- ---------------------------------------------------------------------------------------------
CREATE FUNCTION policygate.release(p_admission_id bigint)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET enable_seqscan = off  -- see the header
AS $$
DECLARE
    v_key text;
BEGIN
    -- Stamped before the lease goes, so that released_us is never later than the moment an
    -- admission can first see the slot free.
    UPDATE policygate.admissions a
       SET released_us = policygate.now_us()
     WHERE a.id = p_admission_id AND a.released_us IS NULL;

    DELETE FROM policygate.leases l WHERE l.admission_id = p_admission_id RETURNING l.key INTO v_key;

    IF v_key IS NOT NULL THEN
        PERFORM pg_notify('policygate', v_key);
        RETURN true;
    END IF;
    RETURN false;
END
$$;

-- ---------------------------------------------------------------------------------------------
-- renew: heartbeat of a holder. Sets expires_us = now + p_lease_us on those of its leases that
-- are still live, and returns their ids. An expired lease is never revived: another process
-- may already have been admitted into that slot. The keys' rows are locked first (in key order,
-- so concurrent renewals cannot deadlock) so that "still live" is decided in the same order as
-- admit() decides a lease has expired.
-- ---------------------------------------------------------------------------------------------
CREATE FUNCTION policygate.renew(p_admission_ids bigint[], p_lease_us bigint)
RETURNS SETOF bigint
LANGUAGE plpgsql VOLATILE
SET enable_seqscan = off  -- see the header
AS $$
DECLARE
    v_now bigint;
BEGIN
    IF p_lease_us IS NULL OR p_lease_us <= 0 THEN
        RAISE EXCEPTION 'policygate.renew: lease_us > 0 is required' USING ERRCODE = '22023';
    END IF;

    PERFORM 1
       FROM policygate.keys k
      WHERE k.key IN (SELECT l.key FROM policygate.leases l
                       WHERE l.admission_id = ANY (p_admission_ids))
      ORDER BY k.key
        FOR UPDATE OF k;

    v_now := policygate.now_us();

    RETURN QUERY
    UPDATE policygate.leases l
       SET expires_us = v_now + p_lease_us
     WHERE l.admission_id = ANY (p_admission_ids)
       AND l.expires_us > v_now
    RETURNING l.admission_id;
END
$$;

-- ---------------------------------------------------------------------------------------------
-- cleanup: periodic housekeeping, called by any process. Deletes
--   * usage buckets that have left their ring (bucket <= head - 61),
--   * expired leases (their admissions are marked lease_lost_us = expires_us if not released),
--   * admissions older than 2 days that have ended (released or lease lost),
--   * key rows with no usage, leases or admissions left.
-- Returns the number of rows deleted. Only one cleanup runs at a time (advisory lock; the
-- others return 0 at once). Leases and keys locked by calls in progress are skipped, not waited
-- for. An admit() of a key being deleted here waits for this transaction and then recreates the
-- key, so idle keys are deleted last, just before commit.
-- ---------------------------------------------------------------------------------------------
CREATE FUNCTION policygate.cleanup()
RETURNS bigint
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_now     bigint;
    v_deleted bigint := 0;
    v_n       bigint;
    v_keys    text[];
BEGIN
    -- Lock id: first 64 bits of md5('policygate.cleanup').
    IF NOT pg_try_advisory_xact_lock(('x' || md5('policygate.cleanup'))::bit(64)::bigint) THEN
        RETURN 0;
    END IF;
    v_now := policygate.now_us();

    -- Expired leases (lock order: leases, then admissions).
    WITH gone AS (
        DELETE FROM policygate.leases l
         WHERE l.admission_id IN (SELECT x.admission_id FROM policygate.leases x
                                   WHERE x.expires_us <= v_now
                                     FOR UPDATE SKIP LOCKED)
        RETURNING l.admission_id, l.expires_us),
    lost AS (
        UPDATE policygate.admissions a
           SET lease_lost_us = g.expires_us
          FROM gone g
         WHERE a.id = g.admission_id AND a.released_us IS NULL)
    SELECT count(*) INTO v_n FROM gone;
    v_deleted := v_deleted + v_n;

    -- Ended admissions older than two days.
    DELETE FROM policygate.admissions a
     WHERE a.admitted_us < v_now - 2 * 86400000000::bigint
       AND (a.released_us IS NOT NULL OR a.lease_lost_us IS NOT NULL);
    GET DIAGNOSTICS v_n = ROW_COUNT;
    v_deleted := v_deleted + v_n;

    -- Buckets out of their window's ring.
    FOR w IN 0..2 LOOP
        DELETE FROM policygate.usage u
         WHERE u.win = w
           AND u.bucket <= v_now / policygate.bucket_width_us(w) - 61;
        GET DIAGNOSTICS v_n = ROW_COUNT;
        v_deleted := v_deleted + v_n;
    END LOOP;

    -- Idle keys: lock the candidates (skipping keys an admission holds), then delete them after
    -- checking again with a fresh snapshot, now that no admission can add rows for them.
    SELECT array_agg(c.key) INTO v_keys
      FROM (SELECT k.key
              FROM policygate.keys k
             WHERE NOT EXISTS (SELECT 1 FROM policygate.usage u WHERE u.key = k.key)
               AND NOT EXISTS (SELECT 1 FROM policygate.leases l WHERE l.key = k.key)
               AND NOT EXISTS (SELECT 1 FROM policygate.admissions a WHERE a.key = k.key)
               FOR UPDATE OF k SKIP LOCKED) c;

    IF v_keys IS NOT NULL THEN
        DELETE FROM policygate.keys k
         WHERE k.key = ANY (v_keys)
           AND NOT EXISTS (SELECT 1 FROM policygate.usage u WHERE u.key = k.key)
           AND NOT EXISTS (SELECT 1 FROM policygate.leases l WHERE l.key = k.key)
           AND NOT EXISTS (SELECT 1 FROM policygate.admissions a WHERE a.key = k.key);
        GET DIAGNOSTICS v_n = ROW_COUNT;
        v_deleted := v_deleted + v_n;
    END IF;

    RETURN v_deleted;
END
$$;
