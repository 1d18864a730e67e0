-- +goose Up
-- docs/sql.md gives auditors "who killed what, when": the last cancel
-- requests by requested_at. cancel_requests keeps a row for every order
-- anyone asked to cancel until retention deletes the order, so without an
-- index on the time that query read and sorted the whole table, in
-- proportion to the history (136 ms warm, 0.8 s cold, at 1M orders of
-- which 5k were canceled: docs/benchmarks.md). It now reads the newest
-- requests backwards and looks each order up by its id. The index costs
-- one entry per cancel request, which is rare, and nothing on the claim
-- or the result.
CREATE INDEX cancel_requests_requested_at ON cancel_requests (requested_at);

-- +goose Down
DROP INDEX cancel_requests_requested_at;
