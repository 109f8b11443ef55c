-- Rate limits: each bucket's theoretical arrival time (µs, the generic cell
-- rate algorithm of `hive_core::task::RateLimit`), locked by the claims that
-- take its tokens.
CREATE TABLE rate_buckets (
    tenant text NOT NULL,
    key    text NOT NULL,
    tat    bigint NOT NULL,
    PRIMARY KEY (tenant, key)
);
