-- Clients that get no token without a DPoP proof (RFC 9449; client add --require-dpop).
ALTER TABLE clients ADD COLUMN require_dpop INTEGER NOT NULL DEFAULT 0 CHECK (require_dpop IN (0, 1));
