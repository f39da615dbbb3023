-- Delivery: why a recipient is held (so that a restart or reload releases only what our own
-- configuration held, never what an operator held), which upstream took each attempt, and
-- when a message reached its final state.

ALTER TABLE recipients ADD COLUMN held_by TEXT
    CHECK (held_by IS NULL OR held_by IN ('config', 'operator', 'bounce'));
ALTER TABLE messages ADD COLUMN finished_at INTEGER;  -- unix ms when no recipient is pending

CREATE INDEX recipients_held ON recipients (held_by) WHERE state = 'held';
CREATE INDEX messages_finished ON messages (finished_at) WHERE finished_at IS NOT NULL;

INSERT INTO counters (name, value) VALUES
    ('delivered', 0), ('deferred', 0), ('bounced', 0), ('held', 0),
    ('bounces_sent', 0), ('bounce_failures', 0), ('config_errors', 0);
