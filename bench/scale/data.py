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
