-- StateStore (adapters/selfhosted/state_store.py). Keys sort bytewise (COLLATE "C"), as on
-- every other backend: the index tables of core/records.py rely on key order.
CREATE TABLE state_items (
    tbl        text COLLATE "C" NOT NULL,
    partition  text COLLATE "C" NOT NULL,
    key        text COLLATE "C" NOT NULL,
    data       text NOT NULL,           -- core.ports.state_store.encode_data, byte for byte
    version    integer NOT NULL,
    expires_at timestamptz,
    PRIMARY KEY (tbl, partition, key)
);
CREATE INDEX state_items_expiry ON state_items (expires_at) WHERE expires_at IS NOT NULL;
