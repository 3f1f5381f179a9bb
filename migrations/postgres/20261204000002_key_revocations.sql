-- Issue #20: an emergency key retirement lists the key's id (`kid`) in the
-- revocation feed, so verifiers that cached the JWKS refuse its tokens.
ALTER TABLE revocations DROP CONSTRAINT revocations_kind_check;
ALTER TABLE revocations ADD CONSTRAINT revocations_kind_check
    CHECK (kind IN ('jti', 'sid', 'sub', 'client', 'kid'));
