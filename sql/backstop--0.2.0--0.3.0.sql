-- backstop 0.2.0 -> 0.3.0: an authenticated repository.
--
-- Every object backstop writes from now on is signed with the cluster's Ed25519 key (kept in
-- $PGDATA/backstop_signing.key, created on first use); nothing unsigned is read. Two functions join
-- the extension: repository_key() prints the public key for the recovery kit, and
-- adopt_repository() vouches once for the unsigned objects 0.2.0 wrote. Nothing existing changes
-- shape: backstop.restores, backstop.job_runs and backstop.schedules keep every row and grant. The
-- new functions get the privileges every backstop function has (sql/privileges.sql): none for
-- PUBLIC, EXECUTE for backstop_admin.
-- The definitions are those cargo pgrx schema generates for 0.3.0 (src/auth.rs); the upgrade test
-- compares the upgraded catalog with a fresh 0.3.0 install, so a drift here fails it.

CREATE FUNCTION "adopt_repository"() RETURNS TABLE (
	"adopted" bigint,  /* i64 */
	"bytes" bigint,  /* i64 */
	"already_authenticated" bigint,  /* i64 */
	"refused" bigint,  /* i64 */
	"record" TEXT  /* Option < String > */
)
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'adopt_repository_wrapper';

CREATE FUNCTION "repository_key"() RETURNS TEXT /* alloc::string::String */
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'repository_key_wrapper';

REVOKE ALL ON FUNCTION @extschema@.adopt_repository() FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.repository_key() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.adopt_repository() TO backstop_admin;
GRANT EXECUTE ON FUNCTION @extschema@.repository_key() TO backstop_admin;
