-- PolicyGate 0005: nested limits (a chain of keys admitted at once).
--
--   * admit_chain(levels...) decides one call for every level of a chain (the account, each
--     parent, the key: one key name and its caps per level) in one statement, and records it at
--     every level or at none: one admissions row and one lease per level, all with the same
--     nonce and chain = the id of the first (the account's) row, which is the lease's id.
--   * commit(), release() and renew() keep their signatures: given a chain's id they act on
--     every level's rows (a flat admission has chain NULL and is handled as before).
--   * Lock order, extended: the chain's keys rows in key order (as renew() locks them), then
--     leases rows, then admissions rows, then usage rows in key order. A chain's commit locks
--     all its admissions rows first, then the usage rows in key order, so that it never waits
--     for an admission's usage row while holding another's.
--   * A refused chain registers its process as a waiter for every refusing level's key, then
--     decides again (as 0004's admit() does for one key); release() and commit() announce every
--     level of a chain, so a process wakes its callers waiting under any of them.

ALTER TABLE policygate.admissions ADD COLUMN chain bigint;
ALTER TABLE policygate.leases ADD COLUMN chain bigint;
CREATE INDEX leases_chain_idx ON policygate.leases (chain) WHERE chain IS NOT NULL;
CREATE INDEX admissions_chain_idx ON policygate.admissions (chain) WHERE chain IS NOT NULL;

-- ---------------------------------------------------------------------------------------------
-- admit_chain: p_keys[i] (64 hex digits, distinct), p_labels[i], and the caps of level i at
-- p_request_caps[3 * (i - 1) + w + 1] / p_token_caps[...] for window w (NULL: no cap) and
-- p_max_concurrent[i] (NULL: no cap). Returns one row when admitted (level NULL, admission_id
-- the chain's id), else one row per refusing level (level = i - 1, counted from 0, with what
-- admit() returns for a single key: refused_by, lease_expiry_us, the level's live buckets).
-- ---------------------------------------------------------------------------------------------
CREATE FUNCTION policygate.admit_chain(
    p_keys           text[],
    p_labels         text[],
    p_tokens         bigint,
    p_request_caps   bigint[],
    p_token_caps     bigint[],
    p_max_concurrent integer[],
    p_lease_us       bigint,
    p_holder         text,
    p_nonce          bigint,
    p_wait_ms        integer,
    p_waiter         bigint)
RETURNS TABLE (
    admitted        boolean,
    admission_id    bigint,
    now_us          bigint,
    level           integer,
    refused_by      text,
    lease_expiry_us bigint,
    wins            smallint[],
    buckets         bigint[],
    requests        bigint[],
    tokens          bigint[],
    registered      boolean)
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET enable_seqscan = off
AS $$
#variable_conflict use_column
DECLARE
    v_n        integer := coalesce(pg_catalog.array_length(p_keys, 1), 0);
    v_now      bigint;
    v_key      text;
    v_i        integer;
    v_live     bigint;
    v_first    bigint;
    v_expired  bigint;
    v_mask     smallint;
    v_masks    smallint[];
    v_heads    bigint[];
    v_req      bigint[];
    v_tok      bigint[];
    v_refused  text[];
    v_expiry   bigint[];
    v_any      boolean;
    v_reg      boolean := false;
    v_chain    bigint;
    v_id       bigint;
BEGIN
    IF v_n < 1 OR v_n > 16 OR pg_catalog.array_length(p_labels, 1) IS DISTINCT FROM v_n
       OR pg_catalog.array_length(p_max_concurrent, 1) IS DISTINCT FROM v_n
       OR pg_catalog.array_length(p_request_caps, 1) IS DISTINCT FROM 3 * v_n
       OR pg_catalog.array_length(p_token_caps, 1) IS DISTINCT FROM 3 * v_n
       OR EXISTS (SELECT 1 FROM unnest(p_keys) AS k(key) WHERE k.key IS NULL OR k.key !~ '^[0-9a-f]{64}$')
       OR (SELECT count(DISTINCT k.key) FROM unnest(p_keys) AS k(key)) <> v_n
       OR p_tokens IS NULL OR p_tokens < 0 OR p_lease_us IS NULL OR p_lease_us <= 0 OR p_nonce IS NULL THEN
        RAISE EXCEPTION 'policygate.admit_chain: 1 to 16 distinct 64-hex-digit keys with labels and caps for each, '
            'tokens >= 0, lease_us > 0 and a nonce are required' USING ERRCODE = '22023';
    END IF;
    IF pg_catalog.current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'policygate.admit_chain must run under READ COMMITTED, not %',
            pg_catalog.current_setting('transaction_isolation') USING ERRCODE = '25000';
    END IF;
    IF p_wait_ms IS NOT NULL THEN
        PERFORM pg_catalog.set_config('lock_timeout', greatest(p_wait_ms, 1)::text, true);
    END IF;

    -- Every level's row, in key order (the order renew() locks them in): chains sharing levels
    -- cannot deadlock.
    FOR v_key IN SELECT k.key FROM unnest(p_keys) AS k(key) ORDER BY k.key COLLATE "C" LOOP
        LOOP
            PERFORM 1 FROM policygate.keys k WHERE k.key = v_key FOR UPDATE;
            EXIT WHEN FOUND;
            INSERT INTO policygate.keys (key) VALUES (v_key) ON CONFLICT DO NOTHING;
        END LOOP;
    END LOOP;

    -- Decided at most twice: once more after registering as a waiter of the refusing levels.
    LOOP
        v_now := policygate.now_us();
        v_masks := '{}'; v_heads := '{}'; v_req := '{}'; v_tok := '{}'; v_refused := '{}'; v_expiry := '{}';
        v_any := false;
        FOR v_i IN 1..v_n LOOP
            v_key := p_keys[v_i];
            SELECT count(l.admission_id) FILTER (WHERE l.expires_us > v_now),
                   min(l.expires_us) FILTER (WHERE l.expires_us > v_now),
                   count(l.admission_id) FILTER (WHERE l.expires_us <= v_now)
              INTO v_live, v_first, v_expired
              FROM policygate.leases l WHERE l.key = v_key;
            IF v_expired > 0 THEN
                WITH gone AS (
                    DELETE FROM policygate.leases l
                     WHERE l.admission_id IN (SELECT x.admission_id FROM policygate.leases x
                                               WHERE x.key = v_key AND x.expires_us <= v_now
                                                 FOR UPDATE SKIP LOCKED)
                    RETURNING l.admission_id, l.expires_us)
                UPDATE policygate.admissions a
                   SET lease_lost_us = g.expires_us
                  FROM gone g
                 WHERE a.id = g.admission_id AND a.released_us IS NULL;
            END IF;

            v_mask := 0;
            FOR w IN 0..2 LOOP
                IF p_request_caps[3 * (v_i - 1) + w + 1] IS NOT NULL OR p_token_caps[3 * (v_i - 1) + w + 1] IS NOT NULL THEN
                    v_mask := v_mask | (1 << w);
                END IF;
            END LOOP;
            v_masks := v_masks || v_mask;
            v_expiry := v_expiry || v_first;

            IF p_max_concurrent[v_i] IS NOT NULL AND v_live >= p_max_concurrent[v_i] THEN
                v_refused := v_refused || 'concurrency'::text;
                v_any := true;
                CONTINUE;
            END IF;
            IF v_mask <> 0 AND EXISTS (
                SELECT 1
                  FROM (SELECT w.win,
                               coalesce(sum(u.requests), 0) AS r,
                               coalesce(sum(u.tokens), 0) AS t
                          FROM pg_catalog.generate_series(0, 2) AS w(win)
                          LEFT JOIN policygate.usage u
                            ON u.key = v_key AND u.win = w.win
                           AND u.bucket BETWEEN v_now / policygate.bucket_width_us(w.win) - 60
                                            AND v_now / policygate.bucket_width_us(w.win)
                         WHERE v_mask & (1 << w.win) <> 0
                         GROUP BY w.win) s
                 WHERE coalesce(s.r + 1 > p_request_caps[3 * (v_i - 1) + s.win + 1]
                             OR s.t + p_tokens > p_token_caps[3 * (v_i - 1) + s.win + 1], false)) THEN
                v_refused := v_refused || 'window'::text;
                v_any := true;
                CONTINUE;
            END IF;
            v_refused := v_refused || NULL::text;
        END LOOP;

        EXIT WHEN NOT v_any OR p_waiter IS NULL OR v_reg;

        -- Refused: register as a waiter of every refusing level, then decide again with a
        -- snapshot taken after every release that did not see the registrations has committed.
        FOR v_key IN SELECT p_keys[i] FROM pg_catalog.generate_series(1, v_n) AS i
                      WHERE v_refused[i] IS NOT NULL ORDER BY p_keys[i] COLLATE "C" LOOP
            PERFORM pg_catalog.pg_advisory_xact_lock(704910, pg_catalog.hashtext(v_key));
            INSERT INTO policygate.waiters AS w (key, waiter, holder, token, expires_us)
            VALUES (v_key, p_waiter, p_holder, p_nonce, policygate.now_us() + p_lease_us)
            ON CONFLICT (key, waiter) DO UPDATE SET token = EXCLUDED.token, expires_us = EXCLUDED.expires_us,
                                                    holder = EXCLUDED.holder;
        END LOOP;
        v_reg := true;
    END LOOP;

    now_us := v_now;
    registered := v_reg;
    IF v_any THEN
        admitted := false;
        FOR v_i IN 1..v_n LOOP
            CONTINUE WHEN v_refused[v_i] IS NULL;
            level := v_i - 1;
            refused_by := v_refused[v_i];
            lease_expiry_us := NULL;
            wins := NULL; buckets := NULL; requests := NULL; tokens := NULL;
            IF refused_by = 'concurrency' THEN
                lease_expiry_us := v_expiry[v_i];
            ELSE
                SELECT coalesce(pg_catalog.array_agg(u.win      ORDER BY u.win, u.bucket), '{}'),
                       coalesce(pg_catalog.array_agg(u.bucket   ORDER BY u.win, u.bucket), '{}'),
                       coalesce(pg_catalog.array_agg(u.requests ORDER BY u.win, u.bucket), '{}'),
                       coalesce(pg_catalog.array_agg(u.tokens   ORDER BY u.win, u.bucket), '{}')
                  INTO wins, buckets, requests, tokens
                  FROM policygate.usage u
                 WHERE u.key = p_keys[v_i]
                   AND v_masks[v_i] & (1 << u.win) <> 0
                   AND u.bucket BETWEEN v_now / policygate.bucket_width_us(u.win) - 60
                                    AND v_now / policygate.bucket_width_us(u.win)
                   AND (u.requests <> 0 OR u.tokens <> 0);
            END IF;
            RETURN NEXT;
        END LOOP;
        RETURN;
    END IF;

    -- Admitted: count it at every level, the usage rows in key order.
    INSERT INTO policygate.usage AS u (key, win, bucket, requests, tokens)
    SELECT p_keys[i], w.win, v_now / policygate.bucket_width_us(w.win), 1, p_tokens
      FROM pg_catalog.generate_series(1, v_n) AS i, pg_catalog.generate_series(0, 2) AS w(win)
     WHERE v_masks[i] & (1 << w.win) <> 0
     ORDER BY p_keys[i] COLLATE "C", w.win
    ON CONFLICT (key, win, bucket)
    DO UPDATE SET requests = u.requests + 1, tokens = u.tokens + EXCLUDED.tokens;

    FOR v_i IN 1..v_n LOOP
        INSERT INTO policygate.admissions (key, admitted_us, tokens, windows, holder, nonce, key_label, chain)
        VALUES (p_keys[v_i], v_now, p_tokens, v_masks[v_i], p_holder, p_nonce, pg_catalog.left(p_labels[v_i], 200), v_chain)
        RETURNING id INTO v_id;
        IF v_chain IS NULL THEN
            v_chain := v_id;
            UPDATE policygate.admissions a SET chain = v_id WHERE a.id = v_id;
        END IF;
        INSERT INTO policygate.leases (admission_id, key, expires_us, nonce, chain)
        VALUES (v_id, p_keys[v_i], v_now + p_lease_us, p_nonce, v_chain);
    END LOOP;

    admitted := true;
    admission_id := v_chain;
    level := NULL;
    refused_by := NULL;
    RETURN NEXT;
END
$$;

-- ---------------------------------------------------------------------------------------------
-- apply_chain_commit: apply_commit() at every level of chain p_chain: the admissions rows
-- locked first (in id order), then each level's usage rows in key order. Returns each level's
-- key and change; nothing for an unknown (chain, nonce).
-- ---------------------------------------------------------------------------------------------
CREATE FUNCTION policygate.apply_chain_commit(p_chain bigint, p_nonce bigint, p_tokens bigint)
RETURNS TABLE (o_key text, o_delta bigint)
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET enable_seqscan = off
AS $$
DECLARE
    v_id bigint;
BEGIN
    PERFORM 1 FROM policygate.admissions a WHERE a.chain = p_chain AND a.nonce = p_nonce ORDER BY a.id FOR UPDATE;
    FOR v_id IN SELECT a.id FROM policygate.admissions a
                 WHERE a.chain = p_chain AND a.nonce = p_nonce ORDER BY a.key COLLATE "C" LOOP
        RETURN QUERY SELECT c.o_key, c.o_delta FROM policygate.apply_commit(v_id, p_nonce, p_tokens) c;
    END LOOP;
END
$$;

-- ---------------------------------------------------------------------------------------------
-- commit: as in 0004 for a single key; for a chain's id, at every level, announcing each level
-- whose count went down. Returns the change (the same at every level).
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
    v_chain bigint;
    v_last  bigint;
BEGIN
    SELECT a.chain INTO v_chain FROM policygate.admissions a WHERE a.id = p_admission_id AND a.nonce = p_nonce;
    IF v_chain IS NULL THEN
        SELECT c.o_key, c.o_delta INTO v_key, v_delta FROM policygate.apply_commit(p_admission_id, p_nonce, p_tokens) c;
        IF v_delta < 0 THEN
            PERFORM policygate.notify_waiters(v_key);
        END IF;
        RETURN v_delta;
    END IF;
    FOR v_key, v_delta IN SELECT c.o_key, c.o_delta FROM policygate.apply_chain_commit(v_chain, p_nonce, p_tokens) c LOOP
        v_last := v_delta;
        IF v_delta < 0 THEN
            PERFORM policygate.notify_waiters(v_key);
        END IF;
    END LOOP;
    RETURN v_last;
END
$$;

-- ---------------------------------------------------------------------------------------------
-- release: as in 0004 for a single key; for a chain's id, deletes every level's lease, commits
-- p_tokens at every level when not NULL, stamps or deletes every level's admission, and
-- announces every level to its waiters. Returns whether a lease was deleted.
-- ---------------------------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION policygate.release(p_admission_id bigint, p_nonce bigint, p_tokens bigint, p_keep boolean)
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
    v_keys    text[];
    v_freed   text[] := '{}';
BEGIN
    -- A chain's leases all carry its id; a single key's lease has none.
    WITH gone AS (
        DELETE FROM policygate.leases l
         WHERE l.chain = p_admission_id AND l.nonce = p_nonce
        RETURNING l.key)
    SELECT pg_catalog.array_agg(g.key) INTO v_keys FROM gone g;

    IF v_keys IS NULL AND NOT EXISTS (SELECT 1 FROM policygate.admissions a
                                       WHERE a.chain = p_admission_id AND a.nonce = p_nonce) THEN
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
            DELETE FROM policygate.admissions a WHERE a.id = p_admission_id AND a.nonce = p_nonce;
        END IF;

        IF v_key IS NOT NULL OR v_delta < 0 THEN
            PERFORM policygate.notify_waiters(coalesce(v_key, v_counted));
        END IF;
        RETURN v_key IS NOT NULL;
    END IF;

    -- A chain.
    IF p_tokens IS NOT NULL THEN
        FOR v_counted, v_delta IN SELECT c.o_key, c.o_delta FROM policygate.apply_chain_commit(p_admission_id, p_nonce, p_tokens) c LOOP
            IF v_delta < 0 THEN v_freed := v_freed || v_counted; END IF;
        END LOOP;
    END IF;

    IF p_keep IS DISTINCT FROM false THEN
        UPDATE policygate.admissions a
           SET released_us = v_now
         WHERE a.chain = p_admission_id AND a.nonce = p_nonce AND a.released_us IS NULL;
    ELSIF v_keys IS NOT NULL THEN
        DELETE FROM policygate.admissions a WHERE a.chain = p_admission_id AND a.nonce = p_nonce;
    END IF;

    FOR v_key IN SELECT DISTINCT k FROM unnest(coalesce(v_keys, '{}') || v_freed) AS t(k) ORDER BY 1 LOOP
        PERFORM policygate.notify_waiters(v_key);
    END LOOP;
    RETURN v_keys IS NOT NULL;
END
$$;

-- ---------------------------------------------------------------------------------------------
-- renew: as in 0002 for single keys; a chain's id renews every level's lease and is returned
-- once when they were live.
-- ---------------------------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION policygate.renew(p_admission_ids bigint[], p_nonces bigint[], p_lease_us bigint)
RETURNS SETOF bigint
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET enable_seqscan = off
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
                       WHERE l.admission_id = ANY (p_admission_ids) OR l.chain = ANY (p_admission_ids))
      ORDER BY k.key COLLATE "C"
        FOR UPDATE OF k;

    v_now := policygate.now_us();

    RETURN QUERY
    WITH renewed AS (
        UPDATE policygate.leases l
           SET expires_us = v_now + p_lease_us
          FROM unnest(p_admission_ids, p_nonces) AS t(id, nonce)
         WHERE (l.admission_id = t.id OR l.chain = t.id)
           AND l.nonce = t.nonce
           AND l.expires_us > v_now
        RETURNING coalesce(l.chain, l.admission_id) AS id)
    SELECT DISTINCT r.id FROM renewed r;
END
$$;
