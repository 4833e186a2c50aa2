-- Every kind of column a table can have, with NULLs, ordinary values and the edge values of each
-- type (NaN, ±Infinity, -0, BC dates, far-future dates, TOASTed values of several MB, identifiers
-- needing quotes, a dropped and a generated column). Shared by the pgrx type matrix test and the
-- snapshot scenarios; creates schema "Typ Matrix" with table "Every Type".
CREATE EXTENSION IF NOT EXISTS hstore;
CREATE SCHEMA "Typ Matrix";
CREATE TYPE "Typ Matrix".mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN "Typ Matrix".posint AS int CHECK (VALUE > 0);
CREATE DOMAIN "Typ Matrix".shorttext AS text CHECK (length(VALUE) < 100);
CREATE TYPE "Typ Matrix".pair AS (a int, b text);
CREATE TABLE "Typ Matrix"."Every Type" (
    "Id" int PRIMARY KEY,
    i2 int2, i4 int4, i8 int8, n numeric, n2 numeric(10,3), f4 float4, f8 float8,
    t text, vc varchar(20), bp char(5), "naïve Ünicode" text, by bytea, bo bool,
    d date, tm time, ttz timetz, ts timestamp, tstz timestamptz, iv interval,
    u uuid, j json, jb jsonb, ip inet, cn cidr, mac macaddr, mac8 macaddr8, m money,
    bt bit(4), vb varbit, a1 int[], a2 text[], a3 numeric[], a4 float8[],
    e "Typ Matrix".mood, dom "Typ Matrix".posint, domt "Typ Matrix".shorttext, comp "Typ Matrix".pair,
    r int4range, tr tstzrange, mr int4multirange, pt point, hs hstore, o oid, tsv tsvector,
    to_drop text,
    big text, bigb bytea,
    gen bigint GENERATED ALWAYS AS ("Id" * 2) STORED
);
ALTER TABLE "Typ Matrix"."Every Type" DROP COLUMN to_drop;
-- Every column NULL.
INSERT INTO "Typ Matrix"."Every Type" ("Id") VALUES (1);
-- Ordinary values.
INSERT INTO "Typ Matrix"."Every Type" VALUES (2,
    -32768, -2147483648, -9223372036854775808, 12345678901234567890.123456789012345678901234567890, 1234567.891,
    3.4028235e38, 1.7976931348623157e308,
    'plain', 'varying', 'ab', 'ünïcødé 表 🎉 e\u0301', '\x00ff10', true,
    '2024-02-29', '24:00:00', '12:34:56.789+05:30', '2001-02-03 04:05:06.789012', '2001-02-03 04:05:06.789012+02',
    '1 year 2 mons 3 days 04:05:06.789', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
    '{"b": 1,   "a": [1, 2.50, null]}', '{"b": 1, "a": [1, 2.50, null], "c": "\u00e9"}',
    '192.168.1.5/24', '10.0.0.0/8', '08:00:2b:01:02:03', '08:00:2b:01:02:03:04:05', '$1,234.56',
    B'1010', B'10101', '{1,NULL,3}', '{{a,b},{NULL,"d e"}}', '{NaN,1.5,-Infinity}', '{-0,NaN,Infinity}',
    'happy', 7, 'short', ROW(1, 'x, "y"'), '[1,10)', '[2024-01-01 00:00+00,2024-02-01 00:00+00)', '{[1,3),[5,7)}',
    '(1.5,-2.25)', 'a=>1, "b c"=>NULL', 4294967295, 'fat:2 rat:3',
    NULL, NULL);
-- Edge values.
INSERT INTO "Typ Matrix"."Every Type" VALUES (3,
    32767, 2147483647, 9223372036854775807, 'NaN', 'NaN', 'NaN', '-0',
    E'tab\there\nnewline\r\\backslash \\N', '', '     ', '', '', false,
    '4714-11-24 BC', '00:00:00', '00:00:00-15:59', '4713-01-01 00:00:00 BC', 'infinity',
    '-178000000 years', '00000000-0000-0000-0000-000000000000',
    '"scalar"', '[]', '::1/128', '::/0', 'ff:ff:ff:ff:ff:ff', 'ff:ff:ff:ff:ff:ff:ff:ff', '-$92,233,720,368,547,758.08',
    B'0000', B'', '[0:1]={7,8}', '{}', '{}', '{}',
    'sad', 2147483647, '', ROW(NULL, NULL), 'empty', '(,)', '{}',
    '(NaN,Infinity)', '', 0, '',
    NULL, NULL);
INSERT INTO "Typ Matrix"."Every Type" ("Id", n, f4, f8, d, ts, tstz, n2, i4) VALUES
    (4, 'Infinity', 'Infinity', 'Infinity', 'infinity', 'infinity', '-infinity', '-9999999.999', 0),
    (5, '-Infinity', '-Infinity', '-Infinity', '-infinity', '-infinity', '294246-12-31 23:59:59.999999+00', 0, 1),
    (6, ('0.' || repeat('0', 1000) || '1')::numeric, '-0', '5e-324', '5874897-12-31', '294246-12-31 23:59:59.999999', '0001-01-01 00:00:00+00 BC', NULL, NULL);
-- TOASTed values of several MB.
INSERT INTO "Typ Matrix"."Every Type" ("Id", big, bigb)
SELECT 7, string_agg(md5(g::text), ''), decode(string_agg(md5(g::text || 'b'), ''), 'hex')
  FROM generate_series(1, 200000) g;
