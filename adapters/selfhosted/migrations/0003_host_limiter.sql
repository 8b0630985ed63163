-- HostLimiter (adapters/selfhosted/host_limiter.py): soft state, so UNLOGGED (not written to
-- the WAL: fast, and emptied after a crash, which only forgets pending delays).
CREATE UNLOGGED TABLE host_limits (
    host          text PRIMARY KEY,
    next_start    double precision NOT NULL,   -- epoch seconds of the limiter's clock
    blocked_until double precision NOT NULL
);
CREATE UNLOGGED TABLE host_leases (
    id      text PRIMARY KEY,
    host    text NOT NULL,
    expires double precision NOT NULL
);
CREATE INDEX host_leases_host ON host_leases (host, expires);
