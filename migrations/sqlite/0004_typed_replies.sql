-- An attempt's reply kept typed beside its text: the upstream's code and RFC 3463 enhanced
-- status (NULL when no upstream answered, or it sent no enhanced status), so that nothing has
-- to parse the text back to know what the reply was.

ALTER TABLE attempts ADD COLUMN reply_code INTEGER;
ALTER TABLE attempts ADD COLUMN reply_enhanced TEXT;
