-- A topic's messages must be numbered (tx, the transaction id, then id) in the order
-- their transactions commit: subscribers receive them in that order. A transaction
-- gets its id at its first write. Waiting for a topic's row lock comes before that,
-- so the row lock alone orders plain publishes; but a transaction that has written
-- already (another topic of its group commit, an idempotency record, a memory value)
-- and then queues for the topic behind a publish that has not, holds the older id and
-- would be delivered first though it commits second.
-- Advisory locks need no transaction id: every writer of a topic's messages takes the
-- topic's lock before its first write, so a later writer of that topic gets its id
-- only after the earlier one has committed. Taken in key order: no deadlock between
-- writers of several topics. 1,024 keys at most (a name's hash, bucketed), so a
-- transaction of many topics (an import) cannot fill the shared lock table; names in
-- the same bucket only wait for each other.

CREATE FUNCTION hive_lock_topics(p_topics text[]) RETURNS void
    LANGUAGE plpgsql
    AS $$
DECLARE
    k integer;
BEGIN
    FOR k IN SELECT DISTINCT hashtext(t) & 1023 FROM unnest(p_topics) AS t ORDER BY 1 LOOP
        PERFORM pg_advisory_xact_lock(1751742053, k);  -- 1751742053: 'hive' as an integer
    END LOOP;
END
$$;

CREATE OR REPLACE FUNCTION hive_publish(p_topics text[], p_senders text[], p_types text[], p_payloads text[],
                                        p_keys text[], p_headers text[])
    RETURNS TABLE (out_id bigint, out_tx text)
    LANGUAGE plpgsql
    AS $$
BEGIN
    PERFORM hive_lock_topics(p_topics);
    INSERT INTO hive_topics AS t (name, created_by, message_count, last_message_at)
    SELECT u.name, (array_agg(u.sender ORDER BY u.n))[1], count(*), now()
    FROM unnest(p_topics, p_senders) WITH ORDINALITY AS u(name, sender, n)
    GROUP BY u.name
    ORDER BY u.name
    ON CONFLICT (name) DO UPDATE
        SET message_count = t.message_count + EXCLUDED.message_count, last_message_at = now();
    RETURN QUERY
    INSERT INTO hive_messages AS m (topic, sender, content_type, payload, key, headers)
    SELECT u.topic, u.sender, u.content_type, u.payload::jsonb, u.key, u.headers::jsonb
    FROM unnest(p_topics, p_senders, p_types, p_payloads, p_keys, p_headers) WITH ORDINALITY
         AS u(topic, sender, content_type, payload, key, headers, n)
    ORDER BY u.n
    RETURNING m.id, m.tx::text;
END
$$;
