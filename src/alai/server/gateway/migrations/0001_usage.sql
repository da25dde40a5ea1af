-- The model gateway's usage records: one row per model request (who, what, where,
-- tokens, latency, outcome, cost), written in batches after the answer.

CREATE TABLE gateway_usage (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at              timestamptz NOT NULL DEFAULT now(),
    principal       text        NOT NULL,
    surface         text        NOT NULL CHECK (surface IN ('ollama', 'openai', 'anthropic')),
    path            text        NOT NULL,
    model           text        NOT NULL,
    backend         text,
    upstream_model  text,
    status          integer     NOT NULL,
    tokens_in       integer,
    tokens_out      integer,
    latency_ms      real        NOT NULL,
    first_byte_ms   real,
    cost_usd        numeric(14, 8)
);

CREATE INDEX gateway_usage_at ON gateway_usage (at);
