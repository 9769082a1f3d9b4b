-- PolicyGate 0004: operations.
--
--   * NOTIFY only when somebody waits. PostgreSQL serialises every transaction that ran NOTIFY
--     at commit, across the whole cluster; 0002 notified on every release and lowered commit.
--     Now a process that has a caller waiting for news of a key registers in
--     policygate.waiters (key, waiter = the store instance, expiry), and release() and commit()
--     notify a key only while a live registration names it. The registration is written by the
--     refused admit() itself, under the key's row lock and an exclusive advisory lock on the
--     key, and admit() then looks again before refusing. release() and commit() take the same
--     advisory lock shared after their changes, before they look for waiters. So either a
--     release committed before the registration took its lock (the second look sees the slot
--     free and admits), or it looks for waiters after the registration committed (and sees
--     it): no wake-up is lost. Registrations expire (a crashed process's go away); their
--     processes refresh them while they wait and delete them when their last waiter leaves.
--   * A pending commit travels with the release: release(id, nonce, tokens, keep) commits
--     first when tokens is not NULL, so a call costs two statements, admit and release.
--   * The admissions log is optional: release(..., keep => false) deletes the admission
--     instead of stamping it released. Cleanup is batched (each call deletes at most p_batch
--     rows of each kind, the caller loops) and keeps ended admissions p_retention_us.
--   * Per-table autovacuum settings for the tables that churn.
--
-- Every function is SECURITY DEFINER with a fixed search_path, and names every object by its
-- schema (see 0003).
--
-- Lock order, as before: keys row -> leases rows -> admissions row -> usage rows, and then the
-- key's advisory lock (class 704910, objid hashtext(key)) last of all. Commits no longer take
-- the key's row (see apply_commit).

CREATE TABLE policygate.waiters (
    key        text   NOT NULL,  -- the key's digest
    waiter     bigint NOT NULL,  -- the store instance (random per PostgresPolicyStore)
    holder     text,             -- its process, for readouts
    token      bigint NOT NULL,  -- the registration's nonce: a late unregister leaves a newer one
    expires_us bigint NOT NULL,
    PRIMARY KEY (key, waiter)
);
CREATE INDEX waiters_expires_idx ON policygate.waiters (expires_us);
COMMENT ON TABLE policygate.waiters IS
    'Processes with a caller waiting for news of a key: only these keys are announced with NOTIFY.';

-- Small tables rewritten all the time: vacuum them after a fixed number of dead rows rather
-- than a fraction of their (small) size, without cost-based pauses.
ALTER TABLE policygate.keys SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_cost_delay = 0);
ALTER TABLE policygate.leases SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000,
    autovacuum_analyze_scale_factor = 0, autovacuum_analyze_threshold = 1000, autovacuum_vacuum_cost_delay = 0);
ALTER TABLE policygate.waiters SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 200,
    autovacuum_vacuum_cost_delay = 0);
ALTER TABLE policygate.usage SET (autovacuum_vacuum_scale_factor = 0.02, autovacuum_analyze_scale_factor = 0.05,
    autovacuum_vacuum_cost_delay = 0);
-- The log grows by a row per call and loses old rows in batches: vacuum often, and count
-- inserts too so that its visibility map keeps up (index-only scans in cleanup).
ALTER TABLE policygate.admissions SET (autovacuum_vacuum_scale_factor = 0.02, autovacuum_analyze_scale_factor = 0.02,
    autovacuum_vacuum_insert_scale_factor = 0.02, autovacuum_vacuum_cost_delay = 1);

DROP FUNCTION policygate.admit(text, text, bigint, bigint[], bigint[], integer, bigint, text, bigint, integer);
DROP FUNCTION policygate.commit(bigint, bigint, bigint);
DROP FUNCTION policygate.release(bigint, bigint);
DROP FUNCTION policygate.cleanup();

-- ---------------------------------------------------------------------------------------------
-- notify_waiters: after a change that may let a waiter in, announce p_key if some process waits
-- for it. Takes the key's advisory lock shared (so it waits for a registration in progress, see
-- the header), then looks with a fresh snapshot. Returns whether it notified.
-- ---------------------------------------------------------------------------------------------
CREATE FUNCTION policygate.notify_waiters(p_key text)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET enable_seqscan = off
AS $$
BEGIN
    PERFORM pg_catalog.pg_advisory_xact_lock_shared(704910, pg_catalog.hashtext(p_key));
    PERFORM 1 FROM policygate.waiters w WHERE w.key = p_key AND w.expires_us > policygate.now_us();
    IF FOUND THEN
        PERFORM pg_catalog.pg_notify('policygate', p_key);
        RETURN true;
    END IF;
    RETURN false;
END
$$;

-- ---------------------------------------------------------------------------------------------
-- admit: as in 0002, plus p_waiter: when not NULL and the call is refused, the store instance
-- p_waiter (process p_holder) is registered as waiting for p_key, with p_nonce as the
-- registration's token and an expiry a lease away, and the call is decided again after the
-- registration (see the header). registered says whether it was.
-- ---------------------------------------------------------------------------------------------
CREATE FUNCTION policygate.admit(
    p_key            text,
    p_label          text,
    p_tokens         bigint,
    p_request_caps   bigint[],
    p_token_caps     bigint[],
    p_max_concurrent integer,
    p_lease_us       bigint,
    p_holder         text,
    p_nonce          bigint,
    p_wait_ms        integer,
    p_waiter         bigint)
RETURNS TABLE (
    admitted        boolean,
    admission_id    bigint,
    now_us          bigint,
    refused_by      text,
    lease_expiry_us bigint,
    wins            smallint[],
    buckets         bigint[],
    requests        bigint[],
    tokens          bigint[],
    registered      boolean)
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET enable_seqscan = off  -- see 0001's header
AS $$
#variable_conflict use_column
DECLARE
    v_now     bigint;
    v_h0      bigint;
    v_h1      bigint;
    v_h2      bigint;
    v_mask    smallint;
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
    IF p_key IS NULL OR p_key !~ '^[0-9a-f]{64}$' OR p_tokens IS NULL OR p_tokens < 0
       OR p_lease_us IS NULL OR p_lease_us <= 0 OR p_nonce IS NULL THEN
        RAISE EXCEPTION 'policygate.admit: a 64-hex-digit key, tokens >= 0, lease_us > 0 and a nonce are required'
            USING ERRCODE = '22023';
    END IF;
    IF pg_catalog.current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'policygate.admit must run under READ COMMITTED, not %',
            pg_catalog.current_setting('transaction_isolation') USING ERRCODE = '25000';
    END IF;
    IF p_wait_ms IS NOT NULL THEN
        PERFORM pg_catalog.set_config('lock_timeout', greatest(p_wait_ms, 1)::text, true);
    END IF;
    registered := false;

    LOOP
        PERFORM 1 FROM policygate.keys k WHERE k.key = p_key FOR UPDATE;
        EXIT WHEN FOUND;
        INSERT INTO policygate.keys (key) VALUES (p_key) ON CONFLICT DO NOTHING;
    END LOOP;

    -- Decided at most twice: once more after registering as a waiter.
    LOOP
        refused_by := NULL;
        v_mask := 0;
        SELECT n.t,
               count(l.admission_id) FILTER (WHERE l.expires_us > n.t),
               min(l.expires_us) FILTER (WHERE l.expires_us > n.t),
               count(l.admission_id) FILTER (WHERE l.expires_us <= n.t)
          INTO v_now, v_live, v_first, v_expired
          FROM (SELECT policygate.now_us() AS t) n
          LEFT JOIN policygate.leases l ON l.key = p_key
         GROUP BY n.t;
        now_us := v_now;

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

        IF p_max_concurrent IS NOT NULL AND v_live >= p_max_concurrent THEN
            refused_by := 'concurrency';
            lease_expiry_us := v_first;
        END IF;

        IF refused_by IS NULL THEN
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

                IF coalesce(   v_req0 + 1        > p_request_caps[1]
                            OR v_tok0 + p_tokens > p_token_caps[1]
                            OR v_req1 + 1        > p_request_caps[2]
                            OR v_tok1 + p_tokens > p_token_caps[2]
                            OR v_req2 + 1        > p_request_caps[3]
                            OR v_tok2 + p_tokens > p_token_caps[3], false) THEN
                    refused_by := 'window';
                END IF;
            END IF;
        END IF;

        EXIT WHEN refused_by IS NULL OR p_waiter IS NULL OR registered;

        -- Refused: register as a waiter, then decide again with a snapshot taken after every
        -- release that did not see the registration has committed.
        PERFORM pg_catalog.pg_advisory_xact_lock(704910, pg_catalog.hashtext(p_key));
        INSERT INTO policygate.waiters AS w (key, waiter, holder, token, expires_us)
        VALUES (p_key, p_waiter, p_holder, p_nonce, policygate.now_us() + p_lease_us)
        ON CONFLICT (key, waiter) DO UPDATE SET token = EXCLUDED.token, expires_us = EXCLUDED.expires_us,
                                                holder = EXCLUDED.holder;
        registered := true;
    END LOOP;

    IF refused_by = 'concurrency' THEN
        admitted := false;
        RETURN NEXT;
        RETURN;
    END IF;
    IF refused_by = 'window' THEN
        admitted := false;
        SELECT coalesce(pg_catalog.array_agg(u.win      ORDER BY u.win, u.bucket), '{}'),
               coalesce(pg_catalog.array_agg(u.bucket   ORDER BY u.win, u.bucket), '{}'),
               coalesce(pg_catalog.array_agg(u.requests ORDER BY u.win, u.bucket), '{}'),
               coalesce(pg_catalog.array_agg(u.tokens   ORDER BY u.win, u.bucket), '{}')
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

    IF v_mask <> 0 THEN
        INSERT INTO policygate.usage AS u (key, win, bucket, requests, tokens)
        SELECT p_key, w.win, w.head, 1, p_tokens
          FROM (VALUES (0::smallint, v_h0), (1::smallint, v_h1), (2::smallint, v_h2)) AS w(win, head)
         WHERE w.head IS NOT NULL
        ON CONFLICT (key, win, bucket)
        DO UPDATE SET requests = u.requests + 1, tokens = u.tokens + EXCLUDED.tokens;
    END IF;

    INSERT INTO policygate.admissions (key, admitted_us, tokens, windows, holder, nonce, key_label)
    VALUES (p_key, v_now, p_tokens, v_mask, p_holder, p_nonce, pg_catalog.left(p_label, 200))
    RETURNING id INTO v_id;

    INSERT INTO policygate.leases (admission_id, key, expires_us, nonce)
    VALUES (v_id, p_key, v_now + p_lease_us, p_nonce);

    admitted := true;
    admission_id := v_id;
    RETURN NEXT;
END
$$;

-- ---------------------------------------------------------------------------------------------
-- apply_commit: 0002's commit without the announcement and without the key's row lock. Sets
-- the admission's tokens to p_tokens in the buckets it was counted in; returns its key and the
-- change (NULL, NULL for an unknown (id, nonce)).
--
-- 0002 took the key's row lock first, which made every commit (and now every release carrying
-- one) wait behind the key's admissions: on a busy key, half the throughput. It is not needed:
-- usage rows are changed by relative updates under their row locks, so nothing is lost; an
-- admission deciding meanwhile sees the count before or after the change, as it would if the
-- commit came a moment earlier or later. The locks taken, admission row then usage rows, follow
-- the one order (release() deletes the lease before it calls this).
-- ---------------------------------------------------------------------------------------------
CREATE FUNCTION policygate.apply_commit(p_admission_id bigint, p_nonce bigint, p_tokens bigint,
                                        OUT o_key text, OUT o_delta bigint)
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET enable_seqscan = off
AS $$
DECLARE
    v_admitted bigint;
    v_tokens   bigint;
    v_windows  smallint;
BEGIN
    IF p_tokens IS NULL OR p_tokens < 0 THEN
        RAISE EXCEPTION 'policygate.commit: tokens >= 0 is required' USING ERRCODE = '22023';
    END IF;

    SELECT a.key, a.admitted_us, a.tokens, a.windows
      INTO o_key, v_admitted, v_tokens, v_windows
      FROM policygate.admissions a
     WHERE a.id = p_admission_id AND a.nonce = p_nonce
       FOR UPDATE;
    IF NOT FOUND THEN
        o_key := NULL;
        RETURN;
    END IF;

    o_delta := p_tokens - v_tokens;
    IF o_delta <> 0 THEN
        UPDATE policygate.usage u
           SET tokens = u.tokens + o_delta
          FROM pg_catalog.generate_series(0, 2) AS w(win)
         WHERE v_windows & (1 << w.win) <> 0
           AND u.key = o_key
           AND u.win = w.win
           AND u.bucket = v_admitted / policygate.bucket_width_us(w.win);

        UPDATE policygate.admissions a SET tokens = p_tokens WHERE a.id = p_admission_id;
    END IF;
END
$$;

-- ---------------------------------------------------------------------------------------------
-- commit: as in 0002 (same signature and result), announcing a decrease only to waiters.
-- ---------------------------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION policygate.commit(p_admission_id bigint, p_nonce bigint, p_tokens bigint)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET enable_seqscan = off
AS $$
DECLARE
    v_key   text;
    v_delta bigint;
BEGIN
    SELECT c.o_key, c.o_delta INTO v_key, v_delta FROM policygate.apply_commit(p_admission_id, p_nonce, p_tokens) c;
    IF v_delta < 0 THEN
        PERFORM policygate.notify_waiters(v_key);
    END IF;
    RETURN v_delta;
END
$$;

-- ---------------------------------------------------------------------------------------------
-- release: deletes the lease, commits p_tokens when not NULL (a permit's last commit travels
-- with its release), then either stamps the admission released (p_keep) or deletes it (the log
-- is not kept), and announces the key to waiters, if any. Lock order: lease, admission, usage.
-- Idempotent; acts on (p_admission_id, p_nonce) only. Returns whether a lease was deleted.
-- ---------------------------------------------------------------------------------------------
CREATE FUNCTION policygate.release(p_admission_id bigint, p_nonce bigint, p_tokens bigint, p_keep boolean)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET enable_seqscan = off
AS $$
DECLARE
    v_now     bigint := policygate.now_us();
    v_key     text;
    v_counted text;
    v_delta   bigint;
BEGIN
    DELETE FROM policygate.leases l
     WHERE l.admission_id = p_admission_id AND l.nonce = p_nonce
    RETURNING l.key INTO v_key;

    IF p_tokens IS NOT NULL THEN
        SELECT c.o_key, c.o_delta INTO v_counted, v_delta FROM policygate.apply_commit(p_admission_id, p_nonce, p_tokens) c;
    END IF;

    IF p_keep IS DISTINCT FROM false THEN
        UPDATE policygate.admissions a
           SET released_us = v_now
         WHERE a.id = p_admission_id AND a.nonce = p_nonce AND a.released_us IS NULL;
    ELSIF v_key IS NOT NULL THEN
        -- Not kept: nothing needs the row once its lease is gone (a retried release finds
        -- neither, and does nothing).
        DELETE FROM policygate.admissions a WHERE a.id = p_admission_id AND a.nonce = p_nonce;
    END IF;

    IF v_key IS NOT NULL OR v_delta < 0 THEN
        -- A slot came back, or (the lease was gone already) the commit alone freed tokens.
        PERFORM policygate.notify_waiters(coalesce(v_key, v_counted));
    END IF;
    RETURN v_key IS NOT NULL;
END
$$;

-- ---------------------------------------------------------------------------------------------
-- refresh_waiters: extends the registrations of store instance p_waiter for p_keys, with the
-- tokens p_tokens (so that an unregister sent earlier with an older token leaves them). A
-- registration that is gone (it expired and was cleaned up while the process could not reach
-- the database) is written again under the key's advisory lock; those keys are returned, and
-- the process must let their waiters look again (a release may have been missed).
-- ---------------------------------------------------------------------------------------------
CREATE FUNCTION policygate.refresh_waiters(p_waiter bigint, p_holder text, p_keys text[], p_tokens bigint[],
                                           p_lease_us bigint)
RETURNS SETOF text
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET enable_seqscan = off
AS $$
DECLARE
    v_key   text;
    v_token bigint;
BEGIN
    -- unnest(a, b) unqualified: its multi-argument form is syntax of FROM, not a function.
    FOR v_key, v_token IN SELECT t.k, t.n FROM unnest(p_keys, p_tokens) AS t(k, n) ORDER BY t.k LOOP
        UPDATE policygate.waiters w SET expires_us = policygate.now_us() + p_lease_us, token = v_token
         WHERE w.key = v_key AND w.waiter = p_waiter AND w.expires_us > policygate.now_us();
        IF NOT FOUND THEN
            PERFORM pg_catalog.pg_advisory_xact_lock(704910, pg_catalog.hashtext(v_key));
            INSERT INTO policygate.waiters AS w (key, waiter, holder, token, expires_us)
            VALUES (v_key, p_waiter, p_holder, v_token, policygate.now_us() + p_lease_us)
            ON CONFLICT (key, waiter) DO UPDATE SET expires_us = EXCLUDED.expires_us, token = EXCLUDED.token;
            RETURN NEXT v_key;
        END IF;
    END LOOP;
END
$$;

-- ---------------------------------------------------------------------------------------------
-- unregister_waiter: the process's last waiter on p_key left. Deletes the registration only if
-- it is still the one with p_token (a newer refusal may have registered again meanwhile).
-- ---------------------------------------------------------------------------------------------
CREATE FUNCTION policygate.unregister_waiter(p_waiter bigint, p_key text, p_token bigint)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    DELETE FROM policygate.waiters w WHERE w.key = p_key AND w.waiter = p_waiter AND w.token = p_token;
    RETURN FOUND;
END
$$;

-- ---------------------------------------------------------------------------------------------
-- cleanup: 0001's housekeeping in batches. One call deletes at most p_batch rows of each kind
-- (expired leases, ended admissions older than p_retention_us, buckets out of their ring,
-- expired waiter registrations, idle keys), in one short transaction, and returns how many it
-- deleted; the caller calls again while that is not 0 (and its time budget lasts). One cleanup
-- at a time (advisory lock; the others return 0 at once).
-- ---------------------------------------------------------------------------------------------
CREATE FUNCTION policygate.cleanup(p_batch integer, p_retention_us bigint)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_now     bigint;
    v_deleted bigint := 0;
    v_n       bigint;
    v_keys    text[];
BEGIN
    IF p_batch IS NULL OR p_batch < 1 OR p_retention_us IS NULL OR p_retention_us < 0 THEN
        RAISE EXCEPTION 'policygate.cleanup: batch >= 1 and retention_us >= 0 are required' USING ERRCODE = '22023';
    END IF;
    IF NOT pg_catalog.pg_try_advisory_xact_lock(('x' || pg_catalog.md5('policygate.cleanup'))::bit(64)::bigint) THEN
        RETURN 0;
    END IF;
    v_now := policygate.now_us();

    WITH gone AS (
        DELETE FROM policygate.leases l
         WHERE l.admission_id IN (SELECT x.admission_id FROM policygate.leases x
                                   WHERE x.expires_us <= v_now
                                   LIMIT p_batch
                                     FOR UPDATE SKIP LOCKED)
        RETURNING l.admission_id, l.expires_us),
    lost AS (
        UPDATE policygate.admissions a
           SET lease_lost_us = g.expires_us
          FROM gone g
         WHERE a.id = g.admission_id AND a.released_us IS NULL)
    SELECT count(*) INTO v_n FROM gone;
    v_deleted := v_deleted + v_n;

    DELETE FROM policygate.admissions a
     WHERE a.id IN (SELECT x.id FROM policygate.admissions x
                     WHERE x.admitted_us < v_now - p_retention_us
                       AND (x.released_us IS NOT NULL OR x.lease_lost_us IS NOT NULL)
                     ORDER BY x.admitted_us
                     LIMIT p_batch);
    GET DIAGNOSTICS v_n = ROW_COUNT;
    v_deleted := v_deleted + v_n;

    FOR w IN 0..2 LOOP
        DELETE FROM policygate.usage u
         WHERE (u.key, u.win, u.bucket) IN (
                SELECT x.key, x.win, x.bucket FROM policygate.usage x
                 WHERE x.win = w AND x.bucket <= v_now / policygate.bucket_width_us(w) - 61
                 LIMIT p_batch);
        GET DIAGNOSTICS v_n = ROW_COUNT;
        v_deleted := v_deleted + v_n;
    END LOOP;

    DELETE FROM policygate.waiters w
     WHERE (w.key, w.waiter) IN (SELECT x.key, x.waiter FROM policygate.waiters x
                                  WHERE x.expires_us <= v_now LIMIT p_batch);
    GET DIAGNOSTICS v_n = ROW_COUNT;
    v_deleted := v_deleted + v_n;

    SELECT pg_catalog.array_agg(c.key) INTO v_keys
      FROM (SELECT k.key
              FROM policygate.keys k
             WHERE NOT EXISTS (SELECT 1 FROM policygate.usage u WHERE u.key = k.key)
               AND NOT EXISTS (SELECT 1 FROM policygate.leases l WHERE l.key = k.key)
               AND NOT EXISTS (SELECT 1 FROM policygate.admissions a WHERE a.key = k.key)
             LIMIT p_batch
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
