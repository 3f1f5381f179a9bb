-- Issue #19: the authorization code flow.
-- Redirect URIs a client registered (space-separated, compared as exact
-- strings). Public clients created before this keep their grants.
ALTER TABLE clients ADD COLUMN redirect_uris TEXT NOT NULL DEFAULT '';
-- When the user was last signed out everywhere (logout everywhere, disable):
-- a browser sign-in (the __Host-tessera-sso cookie) from before it is void.
ALTER TABLE users ADD COLUMN signed_out_at INTEGER NOT NULL DEFAULT 0;
