"""The reader's connections: the URL's transport kept, commands packed by hiredis into the bytes
redis-py's own packer writes."""

from __future__ import annotations

import pytest
import redis.asyncio
from redis.asyncio.connection import SSLConnection, UnixDomainSocketConnection

from feature_store.connection import Endpoint

COMMANDS = [
    ("MGET", b"mtrank:v1:user:u1", "mtrank:v1:item:caf\u00e9", 7),
    ("CLIENT SETNAME", "reader"),  # a two-word command name, sent as two arguments
    ("GET", b""),
]


@pytest.mark.parametrize(
    ("url", "transport"),
    [
        ("redis://127.0.0.1:6379/0", redis.asyncio.Connection),
        ("unix:///tmp/redis.sock", UnixDomainSocketConnection),
        ("rediss://127.0.0.1:6380/0", SSLConnection),
    ],
)
def test_reader_connections_keep_the_transport_and_write_the_same_bytes(
    url: str, transport: type
) -> None:
    reader = Endpoint(url, url).async_client(timeout=1.0).connection_pool.make_connection()
    plain = redis.asyncio.Redis.from_url(url).connection_pool.make_connection()
    assert isinstance(reader, transport)
    assert type(reader) is not type(plain)  # not redis-py's asyncio packer
    for command in COMMANDS:
        assert b"".join(reader.pack_command(*command)) == b"".join(plain.pack_command(*command))
