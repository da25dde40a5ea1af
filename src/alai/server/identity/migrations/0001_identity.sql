-- Users (local, or mapped from an external OIDC issuer), the built-in issuer's
-- signing keys, authorization codes, refresh-token families and API tokens.
-- Every secret is stored as a SHA-256 hash, except signing keys (see decisions.md).

CREATE TABLE identity_users (
    id                uuid        PRIMARY KEY,
    username          text        NOT NULL UNIQUE,
    email             text,
    display_name      text,
    password_hash     text,
    external_issuer   text,
    external_subject  text,
    scopes            text[]      NOT NULL,
    disabled          boolean     NOT NULL DEFAULT false,
    created_at        timestamptz NOT NULL DEFAULT now(),
    last_login_at     timestamptz,
    UNIQUE (external_issuer, external_subject)
);

CREATE TABLE identity_signing_keys (
    kid          text        PRIMARY KEY,
    algorithm    text        NOT NULL,
    private_pem  text        NOT NULL,
    public_jwk   jsonb       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    -- Set when a newer key takes over signing; the key still verifies until
    -- retired_at + the longest token lifetime, then leaves the JWKS.
    retired_at   timestamptz
);

CREATE UNIQUE INDEX identity_signing_keys_one_active ON identity_signing_keys ((retired_at IS NULL)) WHERE retired_at IS NULL;

CREATE TABLE identity_auth_codes (
    code_hash       text        PRIMARY KEY,
    client_id       text        NOT NULL,
    user_id         uuid        NOT NULL REFERENCES identity_users (id) ON DELETE CASCADE,
    redirect_uri    text        NOT NULL,
    code_challenge  text        NOT NULL,
    scope           text        NOT NULL,
    nonce           text,
    family_id       uuid        NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    used_at         timestamptz
);

CREATE INDEX identity_auth_codes_expires_at ON identity_auth_codes (expires_at);

CREATE TABLE identity_refresh_tokens (
    token_hash   text        PRIMARY KEY,
    family_id    uuid        NOT NULL,
    user_id      uuid        NOT NULL REFERENCES identity_users (id) ON DELETE CASCADE,
    client_id    text        NOT NULL,
    scope        text        NOT NULL,
    issued_at    timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    used_at      timestamptz,
    revoked_at   timestamptz
);

CREATE INDEX identity_refresh_tokens_family ON identity_refresh_tokens (family_id);
CREATE INDEX identity_refresh_tokens_expires_at ON identity_refresh_tokens (expires_at);

CREATE TABLE identity_api_tokens (
    id            uuid        PRIMARY KEY,
    name          text        NOT NULL,
    token_hash    text        NOT NULL UNIQUE,
    token_prefix  text        NOT NULL,
    scopes        text[]      NOT NULL,
    created_by    text        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz,
    revoked_at    timestamptz,
    last_used_at  timestamptz
);

CREATE INDEX identity_api_tokens_name ON identity_api_tokens (name);
