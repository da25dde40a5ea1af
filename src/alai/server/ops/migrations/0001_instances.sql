-- Each running server process (replica) records itself here and refreshes the row
-- while it lives: /v1/status shows which replicas are up, the start of the SPOF report.
CREATE TABLE ops_instances (
    id            text        PRIMARY KEY,
    hostname      text        NOT NULL,
    pid           integer     NOT NULL,
    version       text        NOT NULL,
    modules       text[]      NOT NULL,
    started_at    timestamptz NOT NULL,
    last_seen_at  timestamptz NOT NULL
);

CREATE INDEX ops_instances_last_seen_at ON ops_instances (last_seen_at);
