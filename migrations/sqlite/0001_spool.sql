-- The spool: one row per accepted message, its body stored once, one row per recipient with
-- its own delivery state, and a history of every delivery attempt.

CREATE TABLE messages (
    -- Queue ID: sorts by arrival; printed in "250 2.0.0 Ok: queued as ID" and in logs.
    id TEXT PRIMARY KEY NOT NULL,
    received_at INTEGER NOT NULL,          -- unix milliseconds
    -- Envelope sender as it will be sent ('' is the null sender) and as it arrived. They differ
    -- once the rewrite stage has repaired an internal sender.
    sender TEXT NOT NULL,
    original_sender TEXT NOT NULL,
    helo TEXT,                             -- what the client called itself (SMTP only)
    client_addr TEXT,                      -- SMTP client IP; NULL for local submission
    submitter TEXT,                        -- local user who ran sendmail; NULL over TCP
    protocol TEXT NOT NULL,                -- SMTP, ESMTP, or LOCAL (sendmail)
    body_type TEXT NOT NULL DEFAULT '7BIT' CHECK (body_type IN ('7BIT', '8BITMIME')),
    smtputf8 INTEGER NOT NULL DEFAULT 0,
    size INTEGER NOT NULL                  -- bytes of the stored body, Received header included
) STRICT;

CREATE TABLE bodies (
    message_id TEXT PRIMARY KEY NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    data BLOB NOT NULL                     -- the message as sent upstream: CRLF lines, unstuffed
) STRICT;

CREATE TABLE recipients (
    id INTEGER PRIMARY KEY,
    message_id TEXT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    address TEXT NOT NULL,                 -- as it will be sent
    original_address TEXT NOT NULL,        -- as it arrived
    state TEXT NOT NULL DEFAULT 'queued'
        CHECK (state IN ('queued', 'deferred', 'held', 'delivered', 'bounced')),
    next_attempt_at INTEGER NOT NULL,      -- unix ms; due when <= now
    attempts INTEGER NOT NULL DEFAULT 0,
    last_reply TEXT,                       -- the upstream's last answer, or why it is held
    lease_until INTEGER,                   -- unix ms; a delivery worker owns it until then
    updated_at INTEGER NOT NULL
) STRICT;

-- The delivery scheduler's question: which recipients are due now?
CREATE INDEX recipients_due ON recipients (next_attempt_at)
    WHERE state IN ('queued', 'deferred');
CREATE INDEX recipients_message ON recipients (message_id);

CREATE TABLE attempts (
    id INTEGER PRIMARY KEY,
    recipient_id INTEGER NOT NULL REFERENCES recipients(id) ON DELETE CASCADE,
    started_at INTEGER NOT NULL,
    duration_ms INTEGER NOT NULL,
    upstream TEXT,
    reply TEXT NOT NULL,
    outcome TEXT NOT NULL CHECK (outcome IN ('delivered', 'deferred', 'bounced', 'held'))
) STRICT;
CREATE INDEX attempts_recipient ON attempts (recipient_id);

-- Running counters kept in the same transactions as the data they count. `commits` counts
-- enqueue transactions: with group commit it stays well below the number of messages.
CREATE TABLE counters (
    name TEXT PRIMARY KEY NOT NULL,
    value INTEGER NOT NULL
) STRICT;
INSERT INTO counters (name, value) VALUES ('enqueue_commits', 0), ('messages_enqueued', 0);
