-- Delay warnings (delivery.delay_warning, off by default as in Postfix): a recipient still
-- deferred after that long gets one "delayed" DSN, and this remembers that it was sent.
ALTER TABLE recipients ADD COLUMN delay_warned INTEGER NOT NULL DEFAULT 0;
INSERT INTO counters (name, value) VALUES ('delay_warnings_sent', 0);
