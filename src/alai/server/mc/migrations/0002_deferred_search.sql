-- Full-text search vectors become a plain column kept by a trigger instead of a
-- generated column, so that a bulk import can leave them to be computed afterwards.
--
-- Why: GIN insertion of thousands of vectors with many distinct terms costs seconds
-- (bench/mc_import.py); an import sets `alai.mc_defer_search = on` for its
-- transaction, writes NULL vectors, and the control plane's background job fills them
-- in small batches. Until then queries match NULL-vector rows by computing the vector
-- on the fly (mc/service.py), so search results are the same either way.

CREATE FUNCTION mc_search_vector(title text, description text) RETURNS tsvector
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT setweight(to_tsvector('simple', title), 'A')
                 || setweight(to_tsvector('simple', coalesce(description, '')), 'B') $$;

CREATE FUNCTION mc_tasks_search_trigger() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    IF current_setting('alai.mc_defer_search', true) = 'on' THEN
        NEW.search := NULL;
    ELSE
        NEW.search := mc_search_vector(NEW.title, NEW.description);
    END IF;
    RETURN NEW;
END
$$;

ALTER TABLE mc_tasks DROP COLUMN search;
ALTER TABLE mc_tasks ADD COLUMN search tsvector;
UPDATE mc_tasks SET search = mc_search_vector(title, description);
CREATE INDEX mc_tasks_search ON mc_tasks USING gin (search);
CREATE INDEX mc_tasks_search_pending ON mc_tasks (id) WHERE search IS NULL;

CREATE TRIGGER mc_tasks_search BEFORE INSERT OR UPDATE OF title, description ON mc_tasks
    FOR EACH ROW EXECUTE FUNCTION mc_tasks_search_trigger();
