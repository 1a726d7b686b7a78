"""Contacts generated set-wise in PostgreSQL: one `INSERT … SELECT generate_series` per table.

Names, emails and phones are derived from the row number, so a run is reproducible and the
benchmark's queries can name contacts that exist (`person(g)`) without reading them back.
Tags: `vip` on 1 in 10, `newsletter` on 1 in 3, `cohort-<g % 500>` on 1 in 10 (a rare tag),
`spring` on 1 in 5 (the campaign's audience: 200,000 of 1,000,000);
1 in 50 contacts has an extra email in `contact_identity` (as merges leave them).
"""

from __future__ import annotations

import asyncpg

FIRST = (
    "Ada Alan Grace Linus Barbara Ken Dennis Margaret Edsger Donald Frances John Radia Guido Anita "
    "Tim Sophie Katherine Niklaus Hedy Claude Leslie Shafi Yukihiro Bjarne Jean Ivan Carol Vint Whitfield "
    "Adele Butler Mary Joan Dorothy Elena Farid Gustav Hana Ines Jorge Kofi Lucia Mateo Noor Olga Pavel "
    "Quinn Rosa Sven"
).split()
LAST = (
    "Lovelace Turing Hopper Torvalds Liskov Thompson Ritchie Hamilton Dijkstra Knuth Allen McCarthy "
    "Perlman Rossum Borg Berners Wilson Johnson Wirth Lamarr Shannon Lamport Goldwasser Matsumoto "
    "Stroustrup Sammet Sutherland Shaw Cerf Diffie Goldberg Lampson Kay Jones Denning Ershov Haddad "
    "Hartmann Novak Iglesias Mensah Rossi Garcia Khan Petrova Dvorak Fischer Moreno Lindqvist Okafor"
).split()
DOMAINS = "example.test mail.test corp.test acme.test bench.test post.test inbox.test work.test".split()


def person(g: int) -> tuple[str, str, str]:
    """Name, email and phone of generated contact number `g` (1-based), as the SQL below makes them."""
    first, last = FIRST[(g * 7) % len(FIRST)], LAST[(g * 13) % len(LAST)]
    email = f"{first.lower()}.{last.lower()}{g}@{DOMAINS[g % len(DOMAINS)]}"
    return f"{first} {last}", email, f"+1{(g * 7919) % 9_000_000_000 + 1_000_000_000}"


def extra_email(g: int) -> str:
    return f"old{g}@former.test"


_CONTACTS = """
INSERT INTO contact (workspace_id, name, email, phone, attributes, tags, version, created_at, updated_at)
SELECT $1,
       f[(g * 7) % cardinality(f) + 1] || ' ' || l[(g * 13) % cardinality(l) + 1],
       lower(f[(g * 7) % cardinality(f) + 1]) || '.' || lower(l[(g * 13) % cardinality(l) + 1]) || g
         || '@' || d[g % cardinality(d) + 1],
       '+1' || ((g::bigint * 7919) % 9000000000 + 1000000000),
       jsonb_build_object('plan', (ARRAY['free', 'pro', 'team'])[g % 3 + 1], 'n', g),
       (CASE WHEN g % 10 = 0 THEN '["vip"]'::jsonb ELSE '[]'::jsonb END)
         || (CASE WHEN g % 3 = 0 THEN '["newsletter"]'::jsonb ELSE '[]'::jsonb END)
         || (CASE WHEN g % 10 = 7 THEN jsonb_build_array('cohort-' || (g % 500)) ELSE '[]'::jsonb END)
         || (CASE WHEN g % 5 = 1 THEN '["spring"]'::jsonb ELSE '[]'::jsonb END),
       1, now() - make_interval(secs => $4 + 1 - g), now() - make_interval(secs => $4 + 1 - g)
FROM generate_series($2::int, $3::int) AS g, (SELECT $5::text[] AS f, $6::text[] AS l, $7::text[] AS d) AS w
ORDER BY g
"""

_IDENTITIES = """
INSERT INTO contact_identity (workspace_id, contact_id, kind, value)
SELECT c.workspace_id, c.id, 'email', 'old' || (c.attributes->>'n') || '@former.test'
FROM contact c WHERE c.workspace_id = $1 AND (c.attributes->>'n')::int % 50 = 0
"""


async def build(conn: asyncpg.Connection, *, workspace_id: int, contacts: int, chunk: int = 250_000) -> None:
    """`contacts` generated contacts in the workspace (ids ascending with `g`), then ANALYZE."""
    for start in range(1, contacts + 1, chunk):
        end = min(contacts, start + chunk - 1)
        await conn.execute(_CONTACTS, workspace_id, start, end, contacts, FIRST, LAST, DOMAINS)
    await conn.execute(_IDENTITIES, workspace_id)
    await conn.execute("ANALYZE contact")
    await conn.execute("ANALYZE contact_identity")


# --- messages --------------------------------------------------------------------------------
# History, as a workspace that has been sending for a while leaves it: `messages` rows spread
# evenly over the last `days` days (created_at), to contact number `(g * 7919) % contacts + 1`,
# 3 in 4 email and 1 in 4 SMS, in a finished status (80% delivered, 10% sent, 5% bounced, 5%
# failed) so the dispatcher never looks at them; no history rows (`message_event`). The board's
# maintained counters (`message_count`, hour buckets) are filled from them in one GROUP BY, so
# they equal a COUNT(*) as the application keeps them. Loading: the table's secondary indexes and
# its triggers (the foreign keys' checks) are set aside during the inserts and rebuilt after,
# as a restore does; the index definitions are read back from pg_indexes, so they are the migrations'.

_MESSAGES = """
INSERT INTO message (workspace_id, contact_id, channel, to_address, subject, body, variables,
                     send_at, next_attempt_at, status, attempts, created_at, updated_at, sent_at,
                     category, provider_kind, provider_message_id)
SELECT $1, c0 + (g::bigint * 7919) % $4 + 1,
       CASE WHEN g % 4 = 0 THEN 'sms' ELSE 'email' END,
       CASE WHEN g % 4 = 0 THEN '+1' || (1000000000 + g) ELSE 'person' || g || '@example.test' END,
       CASE WHEN g % 4 = 0 THEN '' ELSE 'Your order ' || g END,
       'Hello, your order ' || g || ' is on its way.',
       '{}'::jsonb, t, t,
       CASE WHEN g % 20 = 0 THEN 'bounced' WHEN g % 20 = 1 THEN 'failed'
            WHEN g % 10 = 2 THEN 'sent' ELSE 'delivered' END,
       1, t, t + interval '2 seconds', t + interval '1 second',
       'transactional', 'sandbox', 'hist-' || g
FROM generate_series($2::bigint, $3::bigint) AS g,
     LATERAL (SELECT now() - make_interval(secs => ($5::bigint * 86400 * ($3::bigint - g)) / $6::bigint) AS t) AS at_,
     (SELECT min(id) - 1 AS c0 FROM contact WHERE workspace_id = $1) AS first
"""

_COUNTS = """
INSERT INTO message_count (workspace_id, bucket, status, channel, n)
SELECT workspace_id, date_trunc('hour', created_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC', status, channel, count(*)
FROM message WHERE workspace_id = $1 GROUP BY 1, 2, 3, 4
ON CONFLICT (workspace_id, bucket, status, channel) DO UPDATE SET n = message_count.n + EXCLUDED.n
"""


async def build_messages(
    conn: asyncpg.Connection,
    *,
    workspace_id: int,
    messages: int,
    contacts: int,
    days: int = 30,
    chunk: int = 1_000_000,
) -> None:
    """`messages` finished messages over the last `days` days (see above), counters included."""
    if messages <= 0:
        return
    indexes = await conn.fetch(
        "SELECT i.indexname, i.indexdef FROM pg_indexes i WHERE i.tablename = 'message' "
        "AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)"
    )
    await conn.execute("SET synchronous_commit = off")
    await conn.execute("SET maintenance_work_mem = '512MB'")
    for row in indexes:
        await conn.execute(f'DROP INDEX "{row["indexname"]}"')
    await conn.execute("ALTER TABLE message DISABLE TRIGGER ALL")
    try:
        for start in range(1, messages + 1, chunk):
            end = min(messages, start + chunk - 1)
            await conn.execute(_MESSAGES, workspace_id, start, end, contacts, days, messages)
    finally:
        await conn.execute("ALTER TABLE message ENABLE TRIGGER ALL")
        for row in indexes:
            await conn.execute(row["indexdef"])
    await conn.execute(_COUNTS, workspace_id)
    await conn.execute("ANALYZE message")
    await conn.execute("ANALYZE message_count")
