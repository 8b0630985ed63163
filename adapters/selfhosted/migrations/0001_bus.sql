-- MessageBus and Scheduler (adapters/selfhosted/message_bus.py, scheduler.py).
-- Every time is the database's (now()); no process clock is ever stored.
CREATE TABLE bus_sources (
    source         text PRIMARY KEY,   -- 'queue/<name>' or 'sub/<topic>/<name>'
    max_deliveries integer,            -- NULL: no limit (dead-letter queues)
    dead_letter    text                -- where messages over the limit go
);

CREATE TABLE bus_topics (name text PRIMARY KEY);

CREATE TABLE bus_subscriptions (
    topic  text NOT NULL REFERENCES bus_topics (name),
    name   text NOT NULL,
    filter jsonb NOT NULL,             -- matches when filter <@ attributes
    PRIMARY KEY (topic, name)
);

CREATE TABLE bus_messages (
    seq            bigserial PRIMARY KEY,
    source         text NOT NULL,
    message_id     text NOT NULL,
    body           bytea NOT NULL,
    attributes     jsonb NOT NULL,
    visible_at     timestamptz NOT NULL,
    delivery_count integer NOT NULL DEFAULT 0,
    receipt        text UNIQUE,
    enqueued_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX bus_messages_visible ON bus_messages (source, visible_at, seq);
CREATE INDEX bus_messages_id ON bus_messages (message_id);
