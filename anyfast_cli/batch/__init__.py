"""`anyfast batch`: input records (jobs), resumable output (journal), pacing (limiter), concurrency (runner)."""
