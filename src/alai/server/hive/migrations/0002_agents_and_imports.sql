-- The agents' registry (filled by the import of hivemind.db for now), and the imports
-- of legacy hivemind.db files: one row per run, and every source row kept verbatim.

CREATE TABLE hive_agents (
    name          text        PRIMARY KEY,
    status        text,
    last_seen     timestamptz,
    capabilities  jsonb       NOT NULL DEFAULT '[]',
    metadata      jsonb       NOT NULL DEFAULT '{}',
    created_at    timestamptz NOT NULL DEFAULT now(),
    created_by    text        NOT NULL
);

CREATE TABLE hive_imports (
    id             bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source_name    text        NOT NULL,
    source_sha256  text        NOT NULL,
    imported_by    text        NOT NULL,
    started_at     timestamptz NOT NULL DEFAULT now(),
    report         jsonb       NOT NULL
);

-- row_hash identifies a row by its table, key and content: a later export of the same
-- database (a different file) writes only the rows it has not seen. Not indexed: only
-- imports after the first compare with it, in one hash join.
CREATE TABLE hive_import_rows (
    source_sha256  text   NOT NULL,
    source_table   text   NOT NULL,
    source_key     text   NOT NULL,
    row_hash       text   NOT NULL,
    data           jsonb  NOT NULL,
    target_id      text,
    problems       text[] NOT NULL DEFAULT '{}',
    PRIMARY KEY (source_sha256, source_table, source_key)
);
