//! Table definitions. Instants are microseconds since the Unix epoch in both back ends; the order
//! itself is kept as its JSON document (`doc`) beside the few columns that queries need, so the
//! delivered body is exactly what was stored.

pub const SQLITE: &str = "
CREATE TABLE IF NOT EXISTS orders (
    id          TEXT PRIMARY KEY,
    received_at INTEGER NOT NULL,
    status      TEXT NOT NULL,
    doc         TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS orders_by_time ON orders (received_at, id);
CREATE TABLE IF NOT EXISTS outbox (
    order_id        TEXT PRIMARY KEY,
    state           TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    lease_until     INTEGER,
    last_error      TEXT,
    created_at      INTEGER NOT NULL,
    finished_at     INTEGER
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (state, next_attempt_at);
CREATE TABLE IF NOT EXISTS idempotency (
    client      TEXT NOT NULL,
    key         TEXT NOT NULL,
    body_sha256 BLOB NOT NULL,
    order_id    TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (client, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS counters (
    node INTEGER NOT NULL,
    day  TEXT NOT NULL,
    last INTEGER NOT NULL,
    PRIMARY KEY (node, day)
) WITHOUT ROWID;
";

pub const POSTGRES: &str = "
CREATE TABLE IF NOT EXISTS orders (
    id          TEXT PRIMARY KEY,
    received_at BIGINT NOT NULL,
    status      TEXT NOT NULL,
    doc         TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS orders_by_time ON orders (received_at, id);
CREATE TABLE IF NOT EXISTS outbox (
    order_id        TEXT PRIMARY KEY,
    state           TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    lease_until     BIGINT,
    last_error      TEXT,
    created_at      BIGINT NOT NULL,
    finished_at     BIGINT
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (state, next_attempt_at);
CREATE TABLE IF NOT EXISTS idempotency (
    client      TEXT NOT NULL,
    key         TEXT NOT NULL,
    body_sha256 BYTEA NOT NULL,
    order_id    TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (client, key)
);
CREATE TABLE IF NOT EXISTS counters (
    node SMALLINT NOT NULL,
    day  TEXT NOT NULL,
    last BIGINT NOT NULL,
    PRIMARY KEY (node, day)
);
";

/// Parts of long SMS waiting for their siblings (both back ends; `done` is 0 or 1).
pub const SMS_PARTS: &str = "
CREATE TABLE IF NOT EXISTS sms_parts (
    provider    TEXT NOT NULL,
    part_id     TEXT NOT NULL,
    phone       TEXT NOT NULL,
    total       INTEGER NOT NULL,
    idx         INTEGER NOT NULL,
    text        TEXT NOT NULL,
    received_at BIGINT NOT NULL,
    done        INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (provider, part_id)
);
CREATE INDEX IF NOT EXISTS sms_parts_open ON sms_parts (done, provider, phone, total);
";

/// Outbound call jobs of the dialer (both back ends; `open` is 0 or 1, `doc` the job's JSON).
pub const OUTBOUND_CALLS: &str = "
CREATE TABLE IF NOT EXISTS outbound_calls (
    id         TEXT PRIMARY KEY,
    open       INTEGER NOT NULL,
    doc        TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS outbound_calls_open ON outbound_calls (open, created_at);
";
