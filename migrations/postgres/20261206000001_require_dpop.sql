-- Clients that get no token without a DPoP proof (RFC 9449; client add --require-dpop).
ALTER TABLE clients ADD COLUMN require_dpop BOOLEAN NOT NULL DEFAULT FALSE;
