-- The shared spool on PostgreSQL: the same messages, bodies, recipients, attempts and counters
-- as the SQLite spool (migrations/sqlite, all of its steps at once), plus what a fleet needs:
-- leases with an owner and a token, the nodes that deliver, and the send rate they share.
-- Times are unix milliseconds, as in the SQLite spool.

CREATE TABLE messages (
    id TEXT PRIMARY KEY,                   -- queue ID
    received_at BIGINT NOT NULL,
    sender TEXT NOT NULL,                  -- as it will be sent ('' is the null sender)
    original_sender TEXT NOT NULL,         -- as it arrived
    helo TEXT,
    client_addr TEXT,
    submitter TEXT,
    protocol TEXT NOT NULL,
    body_type TEXT NOT NULL DEFAULT '7BIT' CHECK (body_type IN ('7BIT', '8BITMIME')),
    smtputf8 BOOLEAN NOT NULL DEFAULT FALSE,
    size BIGINT NOT NULL,
    finished_at BIGINT,                    -- when no recipient is pending
    rewrites TEXT NOT NULL DEFAULT ''
);
CREATE INDEX messages_finished ON messages (finished_at) WHERE finished_at IS NOT NULL;

CREATE TABLE bodies (
    message_id TEXT PRIMARY KEY REFERENCES messages(id) ON DELETE CASCADE,
    data BYTEA NOT NULL
);

CREATE TABLE recipients (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id TEXT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    address TEXT NOT NULL,
    original_address TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'queued'
        CHECK (state IN ('queued', 'deferred', 'held', 'delivered', 'bounced')),
    held_by TEXT CHECK (held_by IS NULL OR held_by IN ('config', 'operator', 'bounce')),
    next_attempt_at BIGINT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    last_reply TEXT,
    delay_warned BOOLEAN NOT NULL DEFAULT FALSE,
    -- A lease: the node delivering it (nodes.id), until when, and a token that changes with
    -- every claim. An outcome is recorded only under the lease it was attempted under, so a
    -- node that stalled past its lease cannot overwrite what another node did since.
    lease_until BIGINT,
    lease_owner TEXT,
    lease_token BIGINT,
    updated_at BIGINT NOT NULL
);
CREATE INDEX recipients_due ON recipients (next_attempt_at) WHERE state IN ('queued', 'deferred');
CREATE INDEX recipients_message ON recipients (message_id);
CREATE INDEX recipients_held ON recipients (held_by) WHERE state = 'held';
CREATE INDEX recipients_leased ON recipients (lease_owner) WHERE lease_owner IS NOT NULL;
CREATE SEQUENCE lease_tokens;

CREATE TABLE attempts (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    recipient_id BIGINT NOT NULL REFERENCES recipients(id) ON DELETE CASCADE,
    started_at BIGINT NOT NULL,
    duration_ms BIGINT NOT NULL,
    upstream TEXT,
    reply TEXT NOT NULL,
    outcome TEXT NOT NULL CHECK (outcome IN ('delivered', 'deferred', 'bounced', 'held')),
    reply_code BIGINT,
    reply_enhanced TEXT,
    -- The node that made the attempt.
    node TEXT
);
CREATE INDEX attempts_recipient ON attempts (recipient_id);

CREATE TABLE counters (
    name TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
INSERT INTO counters (name, value) VALUES
    ('enqueue_commits', 0), ('messages_enqueued', 0),
    ('delivered', 0), ('deferred', 0), ('bounced', 0), ('held', 0),
    ('bounces_sent', 0), ('bounce_failures', 0), ('config_errors', 0),
    ('delay_warnings_sent', 0), ('leases_reclaimed', 0), ('stale_outcomes', 0);

-- Every daemon that has delivered from this store: a live one beats its heart every few
-- seconds; a stopped one says so; a dead one just goes quiet.
CREATE TABLE nodes (
    id TEXT PRIMARY KEY,                   -- host name and a random suffix
    host TEXT NOT NULL,
    pid BIGINT NOT NULL,
    version TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL,
    stopped_at BIGINT,
    -- Recipients other nodes took over after this node's lease on them ran out.
    leases_reclaimed BIGINT NOT NULL DEFAULT 0
);

-- The upstream account's send rate, shared by every node: the next free send slot, and until
-- when the upstream asked us to slow down.
CREATE TABLE send_rates (
    upstream TEXT PRIMARY KEY,
    next_slot BIGINT NOT NULL DEFAULT 0,
    throttled_until BIGINT NOT NULL DEFAULT 0
);
