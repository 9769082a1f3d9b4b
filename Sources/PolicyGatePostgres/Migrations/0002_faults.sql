-- PolicyGate 0002: a shared quota under faults.
--
--   * Keys by digest. p_key is the key's fixed-size name (64 hexadecimal digits, the SHA-256 the
--     library computes), so that any key can be stored, indexed and sent with NOTIFY (whose
--     payload is limited to 8000 bytes); admissions.key_label keeps the key as people read it,
--     cut short, for readouts. Keys stored by 0001 under their plain names age out in cleanup().
--   * Lease tokens. An admission id is a sequence number, which a restored or failed-over
--     database can hand out again; every admission also records a random nonce drawn by its
--     process, and commit, release and renew act only on the (id, nonce) they were given.
--   * One lock order everywhere: keys row -> leases rows -> admissions row -> usage rows.
--     0001's release() locked the admission before the lease, the other way round from admit()
--     and cleanup(), and could deadlock with them on an expiring lease. cleanup() takes key rows
--     last but with SKIP LOCKED, so it never waits for one.
--   * admit() waits for the key's row lock no longer than its caller still waits
--     (p_wait_ms, as the statement's lock_timeout), so that an admission its caller gave up on
--     rarely commits; the library gives back any that does.
--
-- Processes of the previous version cannot share a quota with this one (their keys are named
-- differently): their functions are dropped, so they fail (fail_closed: refuse) rather than
-- count apart. Upgrade every process together.

ALTER TABLE policygate.admissions ADD COLUMN nonce bigint, ADD COLUMN key_label text;
ALTER TABLE policygate.leases ADD COLUMN nonce bigint;
COMMENT ON COLUMN policygate.admissions.key IS 'The key''s SHA-256 (64 hex digits), as the library names it.';
COMMENT ON COLUMN policygate.admissions.key_label IS 'The key as people read it, cut to 200 characters (not unique).';

DROP FUNCTION policygate.admit(text, bigint, bigint[], bigint[], integer, bigint, text);
DROP FUNCTION policygate.commit(bigint, bigint);
DROP FUNCTION policygate.release(bigint);
DROP FUNCTION policygate.renew(bigint[], bigint);

-- ---------------------------------------------------------------------------------------------
-- admit: as in 0001, plus the key's label, the admission's nonce and the caller's wait.
-- p_key must be 64 hexadecimal digits; p_wait_ms NULL waits for the key's lock as long as the
-- statement_timeout lets it.
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
    p_wait_ms        integer)
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
SET enable_seqscan = off  -- see 0001's header
AS $$
#variable_conflict use_column
DECLARE
    v_now     bigint;
    v_h0      bigint;
    v_h1      bigint;
    v_h2      bigint;
    v_mask    smallint := 0;
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
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'policygate.admit must run under READ COMMITTED, not %',
            current_setting('transaction_isolation') USING ERRCODE = '25000';
    END IF;
    -- For the rest of this statement's transaction: give up waiting for the key's row when the
    -- caller does (SQLSTATE 55P03), rather than admit a call nobody waits for.
    IF p_wait_ms IS NOT NULL THEN
        PERFORM set_config('lock_timeout', greatest(p_wait_ms, 1)::text, true);
    END IF;

    LOOP
        PERFORM 1 FROM policygate.keys k WHERE k.key = p_key FOR UPDATE;
        EXIT WHEN FOUND;
        INSERT INTO policygate.keys (key) VALUES (p_key) ON CONFLICT DO NOTHING;
    END LOOP;

    SELECT n.t,
           count(l.admission_id) FILTER (WHERE l.expires_us > n.t),
           min(l.expires_us) FILTER (WHERE l.expires_us > n.t),
           count(l.admission_id) FILTER (WHERE l.expires_us <= n.t)
      INTO v_now, v_live, v_first, v_expired
      FROM (SELECT policygate.now_us() AS t) n
      LEFT JOIN policygate.leases l ON l.key = p_key
     GROUP BY n.t;
    now_us := v_now;

    -- Expired leases (lock order: leases, then admissions).
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
        admitted := false;
        refused_by := 'concurrency';
        lease_expiry_us := v_first;
        RETURN NEXT;
        RETURN;
    END IF;

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

        INSERT INTO policygate.usage AS u (key, win, bucket, requests, tokens)
        SELECT p_key, w.win, w.head, 1, p_tokens
          FROM (VALUES (0::smallint, v_h0), (1::smallint, v_h1), (2::smallint, v_h2)) AS w(win, head)
         WHERE w.head IS NOT NULL
        ON CONFLICT (key, win, bucket)
        DO UPDATE SET requests = u.requests + 1, tokens = u.tokens + EXCLUDED.tokens;
    END IF;

    INSERT INTO policygate.admissions (key, admitted_us, tokens, windows, holder, nonce, key_label)
    VALUES (p_key, v_now, p_tokens, v_mask, p_holder, p_nonce, left(p_label, 200))
    RETURNING id INTO v_id;

    INSERT INTO policygate.leases (admission_id, key, expires_us, nonce)
    VALUES (v_id, p_key, v_now + p_lease_us, p_nonce);

    admitted := true;
    admission_id := v_id;
    RETURN NEXT;
END
$$;

-- ---------------------------------------------------------------------------------------------
-- commit: as in 0001, for the admission (p_admission_id, p_nonce) only; NULL for any other.
-- ---------------------------------------------------------------------------------------------
CREATE FUNCTION policygate.commit(p_admission_id bigint, p_nonce bigint, p_tokens bigint)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET enable_seqscan = off
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

    SELECT a.key INTO v_key FROM policygate.admissions a WHERE a.id = p_admission_id AND a.nonce = p_nonce;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;

    -- Lock order: the key row, then the admission.
    PERFORM 1 FROM policygate.keys k WHERE k.key = v_key FOR UPDATE;
    SELECT a.admitted_us, a.tokens, a.windows
      INTO v_admitted, v_tokens, v_windows
      FROM policygate.admissions a
     WHERE a.id = p_admission_id AND a.nonce = p_nonce
       FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
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
-- release: the lease first, then the admission (the one lock order). released_us is read
-- before the lease goes, so it is never later than the moment an admission can first see the
-- slot free. Idempotent; acts on (p_admission_id, p_nonce) only.
-- ---------------------------------------------------------------------------------------------
CREATE FUNCTION policygate.release(p_admission_id bigint, p_nonce bigint)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET enable_seqscan = off
AS $$
DECLARE
    v_now bigint := policygate.now_us();
    v_key text;
BEGIN
    DELETE FROM policygate.leases l
     WHERE l.admission_id = p_admission_id AND l.nonce = p_nonce
    RETURNING l.key INTO v_key;

    UPDATE policygate.admissions a
       SET released_us = v_now
     WHERE a.id = p_admission_id AND a.nonce = p_nonce AND a.released_us IS NULL;

    IF v_key IS NOT NULL THEN
        PERFORM pg_notify('policygate', v_key);
        RETURN true;
    END IF;
    RETURN false;
END
$$;

-- ---------------------------------------------------------------------------------------------
-- renew: as in 0001, for the pairs (p_admission_ids[i], p_nonces[i]).
-- ---------------------------------------------------------------------------------------------
CREATE FUNCTION policygate.renew(p_admission_ids bigint[], p_nonces bigint[], p_lease_us bigint)
RETURNS SETOF bigint
LANGUAGE plpgsql VOLATILE
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
                       WHERE l.admission_id = ANY (p_admission_ids))
      ORDER BY k.key
        FOR UPDATE OF k;

    v_now := policygate.now_us();

    RETURN QUERY
    UPDATE policygate.leases l
       SET expires_us = v_now + p_lease_us
      FROM unnest(p_admission_ids, p_nonces) AS t(id, nonce)
     WHERE l.admission_id = t.id
       AND l.nonce = t.nonce
       AND l.expires_us > v_now
    RETURNING l.admission_id;
END
$$;
