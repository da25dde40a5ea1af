-- The agent runner: agent definitions (versioned), runs (the durable queue), run
-- events (a gapless, resumable stream: see alai/server/streams.py), idempotency.

CREATE TABLE run_agents (
    name        text        PRIMARY KEY,
    version     integer     NOT NULL,
    deleted_at  timestamptz
);

CREATE TABLE run_agent_versions (
    name          text        NOT NULL REFERENCES run_agents (name),
    version       integer     NOT NULL,
    definition    text        NOT NULL,   -- the Markdown file as given
    front_matter  jsonb       NOT NULL,
    system_prompt text        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    created_by    text        NOT NULL,
    PRIMARY KEY (name, version)
);

CREATE TABLE runs (
    id                bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    agent             text        NOT NULL,
    agent_version     integer     NOT NULL,
    model             text,
    executor          text        NOT NULL CHECK (executor IN ('llm', 'command')),
    requires          text[]      NOT NULL,
    input             text        NOT NULL,
    task_id           text,
    state             text        NOT NULL CHECK (state IN ('queued', 'waiting', 'running', 'succeeded',
                                                            'failed', 'cancelled', 'timed_out')),
    reason            text,
    priority          integer     NOT NULL DEFAULT 0,
    timeout_seconds   integer     NOT NULL,
    max_attempts      integer     NOT NULL,
    attempt           integer     NOT NULL DEFAULT 0,  -- claims so far: every worker write names it
    returned          integer     NOT NULL DEFAULT 0,  -- attempts given back on purpose (not counted)
    node              text,
    lease_expires_at  timestamptz,
    deadline          timestamptz,                      -- of the current attempt
    cancel_requested  boolean     NOT NULL DEFAULT false,
    output            text,
    error             text,
    usage             jsonb,
    created_by        text        NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    started_at        timestamptz,
    finished_at       timestamptz,
    updated_at        timestamptz NOT NULL DEFAULT now()
);

-- The queue: what a claim scans, best first.
CREATE INDEX runs_ready ON runs (priority DESC, id) WHERE state IN ('queued', 'waiting');
-- What the sweeper scans: leases and deadlines of running runs.
CREATE INDEX runs_running ON runs (lease_expires_at) WHERE state = 'running';
CREATE INDEX runs_agent ON runs (agent, id DESC);
CREATE INDEX runs_task ON runs (task_id, id DESC) WHERE task_id IS NOT NULL;
CREATE INDEX runs_state ON runs (state, id DESC);

CREATE TABLE run_events (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tx          xid8        NOT NULL DEFAULT pg_current_xact_id(),
    run_id      bigint      NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    attempt     integer     NOT NULL,
    seq         integer,    -- the worker's own numbering: a retried post is stored once
    kind        text        NOT NULL,
    data        jsonb       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX run_events_run ON run_events (run_id, tx, id);
CREATE UNIQUE INDEX run_events_seq ON run_events (run_id, attempt, seq) WHERE seq IS NOT NULL;

CREATE TABLE run_idempotency (
    principal     text        NOT NULL,
    key           text        NOT NULL,
    request_hash  text        NOT NULL,
    status        integer     NOT NULL,
    response      jsonb       NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (principal, key)
);

CREATE INDEX run_idempotency_created ON run_idempotency (created_at);
-- Data-plane nodes and cloud workers: who may claim runs, with which capabilities.
-- Online = a heartbeat newer than ALAI_NODES_OFFLINE_SECONDS (decided when read).

CREATE TABLE node_registry (
    name               text        PRIMARY KEY,
    kind               text        NOT NULL CHECK (kind IN ('node', 'worker')),
    principal          text        NOT NULL,  -- the token's subject that registered it
    capabilities       text[]      NOT NULL DEFAULT '{}',
    max_concurrency    integer     NOT NULL DEFAULT 4,
    version            text,
    hostname           text,
    registered_at      timestamptz NOT NULL DEFAULT now(),
    last_heartbeat_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX node_registry_heartbeat ON node_registry (last_heartbeat_at);
