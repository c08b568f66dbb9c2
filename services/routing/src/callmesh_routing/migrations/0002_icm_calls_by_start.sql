-- Calls whose "a" leg end never arrived (a lost producer, a crash) are swept by age; this index
-- keeps the sweep from scanning the table.
CREATE INDEX icm_calls_by_start ON icm_calls (started_at);
