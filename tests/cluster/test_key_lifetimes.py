"""Valkey keys the cluster writes as replicas come and go have bounded lifetimes, against a
real valkey-server: each replica tag lives until its own deadline (its replica's feedback
horizon), the legacy set of tags is shared with earlier versions for one release, the
trainer's announced joins expire once none of their decisions can be pending, and its
acknowledgements are written only for sources heard from lately (and never expire). Every check
reads a deadline or an expiry the server holds (or writes one already past), so none depends
on how long the test takes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import valkey
from valkey_helpers import ValkeyProcess

from banditroute.cluster import feedback_horizon_s, replica_tag
from banditroute.cluster.connection import ClusterLink
from banditroute.cluster.events import Keys, encode_batch
from banditroute.cluster.orphans import announce_joins, joined_ids
from banditroute.cluster.outbox import Line, stamp
from banditroute.cluster.registry import LEGACY_TAGS_KEY, TAGS_KEY, Registry
from banditroute.cluster.trainer import Trainer
from banditroute.config import ClusterSettings, load_settings
from banditroute.features import extract

LONG_S = 3600.0
"""A long reward window's horizon: far longer than any stall of a loaded machine."""
SHORT_S = 1.0
"""A short one."""
ERRORS = (valkey.exceptions.ValkeyError, OSError)
TAGS = f"t:{TAGS_KEY}"
LEGACY = f"t:{LEGACY_TAGS_KEY}"


def _server_ms(server: valkey.Valkey) -> int:
    seconds, micros = server.time()
    return int(seconds) * 1000 + int(micros) // 1000


@pytest.fixture
def links(valkey_server: ValkeyProcess) -> Iterator[dict[str, ClusterLink]]:
    """Links of replicas named ``long``, ``short`` and ``other`` (prefix ``t``)."""
    made = {
        rid: ClusterLink(
            ClusterSettings(url=valkey_server.url, key_prefix="t", replica_id=rid, heartbeat_s=0.05)
        )
        for rid in ("long", "short", "other")
    }
    yield made
    for link in made.values():
        link.close()


def test_each_tag_lives_until_its_own_deadline(
    valkey_server: ValkeyProcess, links: dict[str, ClusterLink]
) -> None:
    """A beat scores the replica's tag with its own deadline (server time + its feedback
    horizon), so a replica with a short reward window (e.g. one reloaded on a new config)
    does not drop the tag of a replica with a long window while that replica's decisions may
    still get feedback (before, each beat trimmed every tag by the beating replica's window);
    the key expires with the latest deadline."""
    server = valkey_server.client()
    long = Registry(links["long"], "x:1", keep_tags_s=lambda: LONG_S)
    short = Registry(links["short"], "x:2", keep_tags_s=lambda: SHORT_S)
    before = _server_ms(server)
    long.beat()
    short.beat()
    after = _server_ms(server)
    long_deadline = server.zscore(TAGS, replica_tag("long"))
    short_deadline = server.zscore(TAGS, replica_tag("short"))
    assert long_deadline is not None
    assert short_deadline is not None
    assert before + LONG_S * 1000 <= long_deadline <= after + LONG_S * 1000
    assert before + SHORT_S * 1000 <= short_deadline <= after + SHORT_S * 1000
    assert short.has_tag(replica_tag("long")) is True
    assert short.has_tag(replica_tag("never")) is False
    assert SHORT_S * 1000 < server.pttl(TAGS) <= LONG_S * 1000
    # A long-window tag last stamped well over the short window ago, deadline still ahead:
    server.zadd(TAGS, {"0123abcd": _server_ms(server) + LONG_S * 1000 - 10_000})
    short.beat()
    assert short.has_tag("0123abcd") is True
    assert server.zscore(TAGS, replica_tag("long")) == long_deadline


def test_a_tag_past_its_deadline_is_refused_and_dropped(
    valkey_server: ValkeyProcess, links: dict[str, ClusterLink]
) -> None:
    """A tag whose deadline has passed is not known (even before a beat trims it), the next
    beat of any replica drops it from the tags and from the legacy set, and the beating
    replica's own tag stays; a replica's deadline never moves back (a beat under a shorter
    window keeps the later one its decisions were made under)."""
    server = valkey_server.client()
    other = Registry(links["other"], "x:3", keep_tags_s=lambda: LONG_S)
    other.beat()
    past = _server_ms(server) - 1
    server.zadd(TAGS, {"dead0000": past})
    server.sadd(LEGACY, "dead0000")
    assert other.has_tag("dead0000") is False
    other.beat()
    assert server.zscore(TAGS, "dead0000") is None
    assert server.sismember(LEGACY, "dead0000") == 0
    assert server.zrange(TAGS, 0, -1) == [replica_tag("other").encode()]
    deadline = server.zscore(TAGS, replica_tag("other"))
    shorter = Registry(links["other"], "x:3", keep_tags_s=lambda: SHORT_S)
    shorter.beat()
    assert server.zscore(TAGS, replica_tag("other")) == deadline


def test_tags_are_shared_with_earlier_versions_during_an_upgrade(
    valkey_server: ValkeyProcess, links: dict[str, ClusterLink]
) -> None:
    """For one release a beat also adds its tag to the set earlier versions read (so they
    accept feedback for a new replica's decisions) and keeps that set alive for its horizon
    (an old replica's SADD leaves the expiry in place), and a tag only that set holds (an old
    replica's) is known: new replicas accept feedback for old replicas' decisions."""
    server = valkey_server.client()
    server.sadd(LEGACY, "0123abcd")  # what an earlier version's beat writes
    short = Registry(links["short"], "x:2", keep_tags_s=lambda: SHORT_S)
    short.beat()
    assert server.sismember(LEGACY, replica_tag("short")) == 1
    assert 0 < server.pttl(LEGACY) <= SHORT_S * 1000
    assert short.has_tag("0123abcd") is True
    assert short.has_tag("fedc9876") is False
    Registry(links["long"], "x:1", keep_tags_s=lambda: LONG_S).beat()
    assert SHORT_S * 1000 < server.pttl(LEGACY) <= LONG_S * 1000
    short.beat()  # a shorter horizon does not cut the set's life short
    assert SHORT_S * 1000 < server.pttl(LEGACY) <= LONG_S * 1000
    server.sadd(LEGACY, "0123abcd")
    assert server.pttl(LEGACY) > SHORT_S * 1000


def test_announced_joins_expire_once_none_can_be_pending(valkey_server: ValkeyProcess) -> None:
    """The trainer's announcement of the joins of a replica's decisions expires ``keep_s``
    after its newest join: an owner that never comes back (and no further join for its tag)
    leaves no key behind, while an owner back in time still reads its joins."""
    client = valkey_server.client()
    keys = Keys("t")
    tag = replica_tag("owner")
    decision_id = tag + "0" * 24
    now = 1_000_000.0
    announce_joins(client, keys, [(decision_id, now)], oldest=now - 10.0, keep_s=LONG_S)
    assert joined_ids(client, keys, tag) == [decision_id]
    assert 0 < client.pttl(keys.joined(tag)) <= LONG_S * 1000
    announce_joins(client, keys, [(decision_id, now)], oldest=now - 10.0, keep_s=SHORT_S)
    assert 0 < client.pttl(keys.joined(tag)) <= SHORT_S * 1000


def test_acknowledgements_last_and_only_sources_heard_lately_are_written(
    valkey_server: ValkeyProcess, tmp_path: Path
) -> None:
    """The trainer writes acknowledgements only for sources it read a batch from within the
    horizon: a silent source's key is no longer written (before, every checkpoint rewrote an
    acknowledgement for every source ever learned from, and a replica named by its process
    id added one per restart), nor published in the snapshot's marks, nor loaded by a
    leader taking over. An acknowledgement does not expire (a replica restarted from an
    empty outbox under its name reads it and numbers after it; expired, its new lines would
    be dropped as already learned). A silent source that sends again from its outbox floor
    (its key deleted) is deduplicated against its committed mark and acknowledged again."""
    settings = load_settings()
    horizon_s = feedback_horizon_s(settings.reward.window_s)
    client = valkey_server.client(socket_timeout=5)
    keys = Keys("t")
    clock = [1_000_000.0]
    models = [m.id for m in settings.catalog][:2]
    update = orjson.dumps(
        {"k": "u", "features": extract("Hi there").as_dict(), "arms": models, "chosen": 0,
         "probability": 0.5, "reward": 1.0},
        option=orjson.OPT_APPEND_NEWLINE,
    )  # fmt: skip

    def send(source: str, seqs: list[int]) -> None:
        lines = [Line(seq, stamp(seq, update)) for seq in seqs]
        client.xadd(keys.events, encode_batch(source, lines))

    def leader() -> Trainer:
        trainer = Trainer(
            settings, tmp_path / "central.duckdb", client, keys,
            snapshot_period_s=0.2, errors=ERRORS,
        )  # fmt: skip
        trainer._wall = lambda: clock[0]
        assert trainer.lead_now()
        return trainer

    def marks() -> dict[str, int]:
        return dict(orjson.loads(client.hget(keys.snapshot, "marks") or b"{}"))

    trainer = leader()
    try:
        send("gone", [1, 2])
        send("live", [1])
        trainer.drain()
        assert client.get(keys.ack("gone")) == b"2"
        assert client.pttl(keys.ack("gone")) == -1  # no expiry
        clock[0] += horizon_s + 1
        client.delete(keys.ack("gone"))  # deleted by hand: a silent source's is not rewritten
        send("live", [2])
        trainer.drain()
        assert client.get(keys.ack("gone")) is None
        assert client.get(keys.ack("live")) == b"2"
        assert client.pttl(keys.ack("live")) == -1
        assert marks() == {"live": 2}
        assert trainer.policy is not None
        learned = trainer.policy.updates
        send("gone", [1, 2, 3])  # its shipper, restarted, sends again from the outbox floor
        trainer.drain()
        assert client.get(keys.ack("gone")) == b"3"
        assert trainer.policy.updates == learned + 1
        assert marks() == {"gone": 3, "live": 2}
    finally:
        trainer.close()
    clock[0] += horizon_s + 1
    client.delete(keys.events, keys.ack("gone"), keys.ack("live"))
    trainer = leader()
    try:
        trainer.drain()
        assert marks() == {}
        assert client.get(keys.ack("gone")) is None
        assert client.get(keys.ack("live")) is None
        assert trainer.policy is not None
        learned = trainer.policy.updates
        send("live", [1, 2, 3])
        trainer.drain()
        assert trainer.policy.updates == learned + 1
        assert client.get(keys.ack("live")) == b"3"
    finally:
        trainer.close()
