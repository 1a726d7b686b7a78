"""`SWITCHBOARD_REDIS_URL` in its Sentinel form (DESIGN §2), parsed in one place."""

from __future__ import annotations

import pytest

from realtime.redisconn import connect_redis, parse_sentinel_url


def test_a_sentinel_url_names_the_sentinels_the_service_and_the_database() -> None:
    u = parse_sentinel_url("redis+sentinel://:s3cret@10.0.0.1:26379,10.0.0.2:26380/mymaster/2")
    assert u.sentinels == [("10.0.0.1", 26379), ("10.0.0.2", 26380)]
    assert (u.service, u.db, u.password, u.ssl) == ("mymaster", 2, "s3cret", False)
    assert u.sentinel_password is None  # the sentinels get the servers' password only when told


def test_sentinel_options_come_from_the_query_string() -> None:
    u = parse_sentinel_url(
        "rediss+sentinel://h:1/svc?sentinel_password=x&sentinel_ssl=false&socket_timeout=1.5&ssl_cert_reqs=none"
    )
    assert (u.db, u.ssl, u.sentinel_ssl, u.sentinel_password) == (0, True, False, "x")
    assert (u.socket_timeout, u.ssl_cert_reqs) == (1.5, "none")


@pytest.mark.parametrize(
    "url",
    [
        "redis+sentinel://h:1/",  # no service
        "redis+sentinel://h/svc",  # no port
        "redis+sentinel://h:1/svc/x",  # db not a number
        "redis+sentinel://h:1/svc?sentinel_pasword=x",  # a typo is not ignored
        "redis+sentinel://h:1/svc?ssl=maybe",
    ],
)
def test_a_wrong_sentinel_url_is_refused_at_start_up(url: str) -> None:
    with pytest.raises(ValueError):
        connect_redis(url)
