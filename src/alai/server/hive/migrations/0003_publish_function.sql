-- One publish (of any number of messages, topics and senders) as one statement: a
-- group commit (hive/publisher.py) is then a single round trip in autocommit mode,
-- without BEGIN/COMMIT, which cost more client CPU than the inserts themselves.
--
-- The topics' rows are written first, in name order: the row lock that orders a
-- topic's messages by commit (see hive/service.py), taken in an order that cannot
-- deadlock between replicas. The messages keep the order of the arrays.

CREATE FUNCTION hive_publish(p_topics text[], p_senders text[], p_types text[], p_payloads text[], p_keys text[],
                             p_headers text[])
    RETURNS TABLE (out_id bigint, out_tx text)
    LANGUAGE plpgsql
    AS $$
BEGIN
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
