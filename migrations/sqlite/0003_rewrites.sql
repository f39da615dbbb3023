-- What the rewrite stage changed in each message ("envelope from A -> B", "header X-Cron-Env
-- removed"), one decision per line, for `queue show`.
ALTER TABLE messages ADD COLUMN rewrites TEXT NOT NULL DEFAULT '';
