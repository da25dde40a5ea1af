-- Secrets: the local encrypted store, policies, and the audit of every access.

-- AES-256-GCM under ALAI_MASTER_KEY; the path is the associated data, so a
-- ciphertext copied to another path does not decrypt. key_id names the master key
-- (its fingerprint), so a wrong key is told apart from a corrupt value.
CREATE TABLE secret_values (
    path        text        PRIMARY KEY,
    key_id      text        NOT NULL,
    nonce       bytea       NOT NULL,
    ciphertext  bytea       NOT NULL,
    version     integer     NOT NULL DEFAULT 1,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    updated_by  text        NOT NULL
);

CREATE TABLE secret_policies (
    name         text        PRIMARY KEY,
    principals   text[]      NOT NULL,
    actions      text[]      NOT NULL,
    paths        text[]      NOT NULL,
    description  text,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    updated_by   text        NOT NULL
);

CREATE TABLE secret_audit (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at              timestamptz NOT NULL DEFAULT now(),
    principal       text        NOT NULL,
    principal_kind  text        NOT NULL,
    action          text        NOT NULL,
    path            text        NOT NULL,
    outcome         text        NOT NULL,
    mount           text,
    client          text,
    detail          text
);

CREATE INDEX secret_audit_at ON secret_audit (at DESC, id DESC);
CREATE INDEX secret_audit_path ON secret_audit (path, id DESC);
CREATE INDEX secret_audit_principal ON secret_audit (principal, id DESC);
