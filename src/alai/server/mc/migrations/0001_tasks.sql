-- Mission Control: tasks, comments, history, the change log the live stream reads,
-- idempotency records, and the verbatim rows of imported legacy databases.

CREATE SEQUENCE mc_task_number START 1;

CREATE TABLE mc_tasks (
    id           text        PRIMARY KEY,
    title        text        NOT NULL CHECK (length(title) BETWEEN 1 AND 500),
    description  text        CHECK (length(description) <= 200000),
    status       text        NOT NULL,
    priority     smallint    NOT NULL DEFAULT 2 CHECK (priority BETWEEN 0 AND 4),
    assignee     text,
    project      text,
    labels       text[]      NOT NULL DEFAULT '{}',
    parent_id    text        REFERENCES mc_tasks (id) DEFERRABLE INITIALLY DEFERRED,
    due_date     date,
    metadata     jsonb       NOT NULL DEFAULT '{}',
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    closed_at    timestamptz,
    archived_at  timestamptz,
    created_by   text        NOT NULL,
    version      integer     NOT NULL DEFAULT 1,
    search       tsvector    GENERATED ALWAYS AS (
                     setweight(to_tsvector('simple', title), 'A') ||
                     setweight(to_tsvector('simple', coalesce(description, '')), 'B')) STORED
);

CREATE INDEX mc_tasks_status ON mc_tasks (status) WHERE archived_at IS NULL;
CREATE INDEX mc_tasks_assignee ON mc_tasks (assignee) WHERE archived_at IS NULL;
CREATE INDEX mc_tasks_project ON mc_tasks (project) WHERE archived_at IS NULL;
CREATE INDEX mc_tasks_parent ON mc_tasks (parent_id);
CREATE INDEX mc_tasks_updated ON mc_tasks (updated_at, id);
CREATE INDEX mc_tasks_created ON mc_tasks (created_at, id);
CREATE INDEX mc_tasks_labels ON mc_tasks USING gin (labels);
CREATE INDEX mc_tasks_search ON mc_tasks USING gin (search);

CREATE TABLE mc_comments (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    task_id     text        NOT NULL REFERENCES mc_tasks (id) ON DELETE CASCADE,
    author      text        NOT NULL,
    body        text        NOT NULL CHECK (length(body) BETWEEN 1 AND 100000),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX mc_comments_task ON mc_comments (task_id, id);

CREATE TABLE mc_history (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    task_id     text        NOT NULL REFERENCES mc_tasks (id) ON DELETE CASCADE,
    field       text        NOT NULL,
    old_value   jsonb,
    new_value   jsonb,
    changed_by  text        NOT NULL,
    changed_at  timestamptz NOT NULL DEFAULT now(),
    source      text        NOT NULL DEFAULT 'api'
);

CREATE INDEX mc_history_task ON mc_history (task_id, id);

-- The change log, read in (tx, id) order: a reader only takes rows whose transaction
-- is older than every transaction still running, so no row can ever appear before a
-- position it already delivered (see mc/stream.py).
CREATE TABLE mc_events (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tx          xid8        NOT NULL DEFAULT pg_current_xact_id(),
    task_id     text        NOT NULL,
    kind        text        NOT NULL,
    actor       text        NOT NULL,
    payload     jsonb       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX mc_events_position ON mc_events (tx, id);

CREATE TABLE mc_idempotency (
    principal     text        NOT NULL,
    key           text        NOT NULL,
    request_hash  text        NOT NULL,
    status        integer     NOT NULL,
    response      jsonb       NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (principal, key)
);

CREATE INDEX mc_idempotency_created ON mc_idempotency (created_at);

-- Imports of legacy databases: one row per run, and every source row kept verbatim.
CREATE TABLE mc_imports (
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source_name  text        NOT NULL,
    source_sha256 text       NOT NULL,
    imported_by  text        NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    report       jsonb       NOT NULL
);

CREATE TABLE mc_import_rows (
    source_sha256  text   NOT NULL,
    source_table   text   NOT NULL,
    source_key     text   NOT NULL,
    data           jsonb  NOT NULL,
    target_id      text,
    problems       text[] NOT NULL DEFAULT '{}',
    PRIMARY KEY (source_sha256, source_table, source_key)
);
