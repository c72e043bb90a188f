-- uuid_to_ulid(uuid): the one function pgledger.sql calls and does not define (pgledger loads it
-- from a library it vendors). Written for this benchmark: the UUID's 128 bits as the 26 Crockford
-- base32 digits of a ULID. The 128 bits are read as three numbers of 48, 40 and 40 bits, which
-- are 10, 8 and 8 digits (the first with a ULID's two leading zero bits).
-- One expression: an aggregate over the 26 digits cost about 50 µs a call here, this about 10.
CREATE FUNCTION uuid_to_ulid(id uuid) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
    digits CONSTANT text := '0123456789ABCDEFGHJKMNPQRSTVWXYZ';
    hex CONSTANT text := translate(id::text, '-', '');
    t CONSTANT bigint := ('x' || substr(hex, 1, 12))::bit(48)::bigint;
    r CONSTANT bigint := ('x' || substr(hex, 13, 10))::bit(40)::bigint;
    s CONSTANT bigint := ('x' || substr(hex, 23, 10))::bit(40)::bigint;
BEGIN
    RETURN substr(digits, (t >> 45 & 31)::int + 1, 1) || substr(digits, (t >> 40 & 31)::int + 1, 1)
        || substr(digits, (t >> 35 & 31)::int + 1, 1) || substr(digits, (t >> 30 & 31)::int + 1, 1)
        || substr(digits, (t >> 25 & 31)::int + 1, 1) || substr(digits, (t >> 20 & 31)::int + 1, 1)
        || substr(digits, (t >> 15 & 31)::int + 1, 1) || substr(digits, (t >> 10 & 31)::int + 1, 1)
        || substr(digits, (t >> 5 & 31)::int + 1, 1) || substr(digits, (t & 31)::int + 1, 1)
        || substr(digits, (r >> 35 & 31)::int + 1, 1) || substr(digits, (r >> 30 & 31)::int + 1, 1)
        || substr(digits, (r >> 25 & 31)::int + 1, 1) || substr(digits, (r >> 20 & 31)::int + 1, 1)
        || substr(digits, (r >> 15 & 31)::int + 1, 1) || substr(digits, (r >> 10 & 31)::int + 1, 1)
        || substr(digits, (r >> 5 & 31)::int + 1, 1) || substr(digits, (r & 31)::int + 1, 1)
        || substr(digits, (s >> 35 & 31)::int + 1, 1) || substr(digits, (s >> 30 & 31)::int + 1, 1)
        || substr(digits, (s >> 25 & 31)::int + 1, 1) || substr(digits, (s >> 20 & 31)::int + 1, 1)
        || substr(digits, (s >> 15 & 31)::int + 1, 1) || substr(digits, (s >> 10 & 31)::int + 1, 1)
        || substr(digits, (s >> 5 & 31)::int + 1, 1) || substr(digits, (s & 31)::int + 1, 1);
END
$$;
