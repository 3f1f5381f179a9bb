-- Issue #18: the rows PostgreSQL transactions lock (SELECT … FOR UPDATE) to
-- serialise revocation inserts and audit appends across instances. A row
-- lock instead of pg_advisory_xact_lock because the distributed engines
-- tessera may run on (YugabyteDB, CockroachDB; docs/scaling.md) lock rows
-- for real but lack advisory locks or fake them. SQLite has one writer and
-- never reads this table; it exists there so both schemas stay the same.
CREATE TABLE store_locks (
    name TEXT PRIMARY KEY
);
INSERT INTO store_locks (name) VALUES ('revocations'), ('audit');
