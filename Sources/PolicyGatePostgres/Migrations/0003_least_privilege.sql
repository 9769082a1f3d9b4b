-- PolicyGate 0003: least privilege.
--
-- The application runs as a role that may only call these functions (the migration runner
-- grants it EXECUTE on every function of the schema and USAGE on the schema, nothing else;
-- see PostgresPolicyStore.migrate). So every function runs with its owner's rights
-- (SECURITY DEFINER), and with a fixed search_path: otherwise a caller who may create objects
-- in a schema on its own search_path could shadow a built-in the bodies call. A role with
-- CREATE on public was shown to hand out 3 leases under max_concurrent = 1 by creating
-- public.count(bigint), which admit()'s count(l.admission_id) preferred to pg_catalog's
-- count("any"). Every table and function of PolicyGate is already schema-qualified in the
-- bodies below; built-ins resolve in pg_catalog, and pg_temp comes last so that nobody's
-- temporary objects are looked up first.
--
-- The bodies of 0002 are unchanged: ALTER FUNCTION keeps them and adds the two properties
-- (admit, commit, release and renew keep their SET enable_seqscan = off).

ALTER FUNCTION policygate.now_us()
    SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION policygate.bucket_width_us(integer)
    SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION policygate.admit(text, text, bigint, bigint[], bigint[], integer, bigint, text, bigint, integer)
    SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION policygate.commit(bigint, bigint, bigint)
    SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION policygate.release(bigint, bigint)
    SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION policygate.renew(bigint[], bigint[], bigint)
    SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION policygate.cleanup()
    SECURITY DEFINER SET search_path = pg_catalog, pg_temp;

-- The schema's version, for the store's check at start: the runtime role may not read
-- policygate.schema_migrations itself.
CREATE FUNCTION policygate.schema_version() RETURNS integer
LANGUAGE sql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ SELECT max(m.version) FROM policygate.schema_migrations m $$;

-- Nobody but the owner and the roles the runner grants may call the functions or read the
-- tables (the runner repeats this after every migration, for functions later files create).
REVOKE ALL ON SCHEMA policygate FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA policygate FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA policygate FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA policygate FROM PUBLIC;
