-- Usernames and client ids differing only in letter case ("Alice" beside
-- "alice") would read as the same account in logs, consoles and the audit
-- trail; refuse the second one. Lookups stay exact: "ALICE" does not log in
-- as "alice".
CREATE UNIQUE INDEX users_username_lower ON users (lower(username));
CREATE UNIQUE INDEX clients_id_lower ON clients (lower(id));
