-- HiveMind: topics, durable messages (read as a stream by position (tx, id), see
-- alai/server/streams.py), idempotency records and the agents' shared memory.

CREATE TABLE hive_topics (
    name                 text        PRIMARY KEY,
    description          text,
    retention_max_age    interval,
    retention_max_count  bigint      CHECK (retention_max_count > 0),
    message_count        bigint      NOT NULL DEFAULT 0,
    last_message_at      timestamptz,
    created_at           timestamptz NOT NULL DEFAULT now(),
    created_by           text        NOT NULL
);

CREATE TABLE hive_messages (
    id            bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tx            xid8        NOT NULL DEFAULT pg_current_xact_id(),
    topic         text        NOT NULL REFERENCES hive_topics (name) ON DELETE CASCADE,
    sender        text        NOT NULL,
    key           text,
    headers       jsonb       NOT NULL DEFAULT '{}',
    content_type  text        NOT NULL CHECK (content_type IN ('json', 'text')),
    payload       jsonb       NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX hive_messages_position ON hive_messages (tx, id);
CREATE INDEX hive_messages_topic ON hive_messages (topic, id);
CREATE INDEX hive_messages_topic_created ON hive_messages (topic, created_at);

CREATE TABLE hive_idempotency (
    principal     text        NOT NULL,
    key           text        NOT NULL,
    request_hash  text        NOT NULL,
    status        integer     NOT NULL,
    response      jsonb       NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (principal, key)
);

CREATE INDEX hive_idempotency_created ON hive_idempotency (created_at);

CREATE TABLE hive_memory (
    namespace   text        NOT NULL,
    key         text        NOT NULL,
    value       jsonb       NOT NULL,
    version     integer     NOT NULL DEFAULT 1,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    updated_by  text        NOT NULL,
    PRIMARY KEY (namespace, key)
);
