"""Replicas as separate hosts: three `lamina run` processes, each in a network namespace of its own (a veth pair
from it to a bridge on a private /24) and each with a LAMINA_HOME of its own, reach PostgreSQL, the pgvector
PostgreSQL, Redis and the fake upstream only over that network, never over localhost (inside a namespace,
127.0.0.1 is the namespace's own). The services here listen on 127.0.0.1 or a Unix socket, so forwarders in
the root namespace, bound to the bridge's address, carry the traffic. The test talks to each replica at its own
address: a file uploaded on A is attached on B and found by a search on C, then deleted on A; an API key made
once is known to all of them (Postgres), and its daily request limit is shared by all of them (Redis).

Needs root and iproute2; skipped with one line otherwise (even under LAMINA_REQUIRE_SERVICES, which makes a
failure of anything else here a failure)."""

from __future__ import annotations

import datetime
import os
import random
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from postgres_helpers import Forwarder, Replica, start_replicas, tcp_url, unavailable, unix_socket

sys.path.insert(0, str(Path(__file__).parents[1] / "e2e"))
from fake_openai import EMBEDDING_MODEL, FakeOpenAI

REDIS = ("127.0.0.1", 6379)
HOSTS = 3
REPLICA_PORT = 8321  # the same port on every host: each namespace has ports of its own
REQUESTS_PER_DAY = 3
INGESTED_WITHIN_SECONDS = 60


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@dataclass
class Network:
    """A bridge with the root namespace at .1 and one namespace per host at .10, .11, ..."""

    suffix: str
    subnet: str  # "10.a.b"
    bridge: str
    namespaces: list[str] = field(default_factory=list)

    @property
    def gateway(self) -> str:
        return f"{self.subnet}.1"

    def address(self, host: int) -> str:
        return f"{self.subnet}.{10 + host}"

    def remove(self) -> None:
        for namespace in self.namespaces:  # deleting a namespace deletes its veth end, and with it the pair
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)


def unused_subnet() -> str:
    routes = subprocess.run(["ip", "-4", "route", "show", "table", "all"], capture_output=True, text=True).stdout
    addresses = subprocess.run(["ip", "-4", "addr"], capture_output=True, text=True).stdout
    for _ in range(100):
        subnet = f"10.{random.randint(200, 254)}.{random.randint(0, 255)}"
        if f"{subnet}." not in routes + addresses:
            return subnet
    raise AssertionError("no free 10.x.y.0/24 for the test network")


@pytest.fixture
def network() -> Iterator[Network]:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("network namespaces need root and iproute2 (`ip`); the replicas-as-hosts test is skipped")
    suffix = secrets.token_hex(3)  # names unique per run: parallel runs never collide
    made = Network(suffix, unused_subnet(), f"lmbr{suffix}")
    try:
        try:
            ip("link", "add", made.bridge, "type", "bridge")
            ip("addr", "add", f"{made.gateway}/24", "dev", made.bridge)
            ip("link", "set", made.bridge, "up")
            for host in range(HOSTS):
                namespace, outside, inside = f"lamina-{suffix}-{host}", f"lmv{suffix}{host}", f"lmp{suffix}{host}"
                ip("netns", "add", namespace)
                made.namespaces.append(namespace)
                ip("link", "add", outside, "type", "veth", "peer", "name", inside)
                ip("link", "set", inside, "netns", namespace)
                ip("link", "set", outside, "master", made.bridge, "up")
                ip("-n", namespace, "addr", "add", f"{made.address(host)}/24", "dev", inside)
                ip("-n", namespace, "link", "set", inside, "up")
                ip("-n", namespace, "link", "set", "lo", "up")
        except subprocess.CalledProcessError as exc:
            unavailable(f"could not make network namespaces ({' '.join(exc.cmd)}: {exc.stderr.strip()})")
        yield made
    finally:
        made.remove()


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A key prefix of this test's own in the Redis at 127.0.0.1:6379; its keys are deleted afterwards."""
    import redis

    client = redis.Redis(*REDIS, socket_timeout=5)
    try:
        client.ping()
    except redis.RedisError as exc:
        client.close()
        unavailable(f"no Redis at {REDIS[0]}:{REDIS[1]} ({type(exc).__name__}); the replicas-as-hosts test skipped")
    prefix = f"lamina:test:{secrets.token_hex(6)}:"
    try:
        yield prefix
    finally:
        for key in client.scan_iter(match=prefix + "*"):
            client.delete(key)
        client.close()


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as upstream:
        yield upstream


def replica_config(
    postgres_url: str, pgvector_url: str, fake_url: str, redis_url: str, redis_prefix: str
) -> dict[str, Any]:
    return {
        "storage": {"type": "postgres", "config": {"url": postgres_url, "max_connections": 4}},
        "providers": {
            "inference": [
                {
                    "id": "fake",
                    "type": "remote::openai",
                    "config": {
                        "base_url": fake_url,
                        "models": [EMBEDDING_MODEL],
                        "embedding_models": [EMBEDDING_MODEL],
                        "max_retries": 0,
                    },
                }
            ],
            "files": [{"id": "files", "type": "remote::postgres"}],
            "vector_io": [{"id": "pgvector", "type": "remote::pgvector", "config": {"url": pgvector_url}}],
        },
        "apis": {"vector_io": {"default_embedding_model": f"fake/{EMBEDDING_MODEL}"}},
        "auth": {
            "providers": [{"id": "keys", "type": "api_keys"}],
            "quotas": {"redis_url": redis_url, "redis_prefix": redis_prefix},
        },
    }


def make_key(run_yaml: Path, name: str, *limits: str) -> str:
    """`lamina keys create`, as an operator runs it once, anywhere that reaches the database."""
    command = [str(Path(sys.executable).parent / "lamina"), "keys", "create", name, "--config", str(run_yaml)]
    for limit in limits:
        command += ["--limit", limit]
    created = subprocess.run(command, capture_output=True, text=True, check=True)
    return created.stdout.strip().splitlines()[-1]


def wait_for_a_fresh_day_window() -> None:
    """Daily request windows change at midnight UTC; a test that counts in one must not straddle two."""
    now = datetime.datetime.now(datetime.UTC)
    left = (now.replace(hour=0, minute=0, second=0, microsecond=0) + datetime.timedelta(days=1) - now).total_seconds()
    if left < 60:
        time.sleep(left + 1)


@pytest.mark.slow  # three `lamina run` processes in namespaces: tens of seconds on a loaded machine
def test_replicas_on_separate_hosts_share_everything_over_the_network(
    network: Network, redis_prefix: str, fake: FakeOpenAI, postgres_url: str, pgvector_url: str, tmp_path: Path
) -> None:
    gateway = network.gateway
    forwarders = [
        Forwarder(("127.0.0.1", 5432), gateway),
        Forwarder(unix_socket(pgvector_url), gateway),
        Forwarder(REDIS, gateway),
        Forwarder(("127.0.0.1", fake.port), gateway),
    ]
    replicas: list[Replica] = []
    try:
        storage, vectors, redis_edge, upstream = (forwarder.start() for forwarder in forwarders)
        config = replica_config(
            tcp_url(postgres_url, gateway, storage.port),
            tcp_url(pgvector_url, gateway, vectors.port),
            f"http://{gateway}:{upstream.port}/v1",
            f"redis://{gateway}:{redis_edge.port}/0",
            redis_prefix,
        )
        homes = [tmp_path / f"home-{host}" for host in range(HOSTS)]
        replicas = [
            Replica(
                f"host-{host}",
                config,
                tmp_path / f"host-{host}",
                host=network.address(host),
                port=REPLICA_PORT,
                prefix=["ip", "netns", "exec", network.namespaces[host]],
                env={"LAMINA_HOME": str(homes[host])},
            )
            for host in range(HOSTS)
        ]
        start_replicas(replicas)
        for replica, namespace in zip(replicas, network.namespaces, strict=True):
            where = subprocess.run(["ip", "netns", "identify", str(replica.pid)], capture_output=True, text=True)
            assert where.stdout.strip() == namespace, (replica.name, where.stdout, where.stderr)

        # The operator's one key, made from the root namespace straight on the database; every host knows it.
        operator_yaml = tmp_path / "operator.yaml"
        operator_yaml.write_text((tmp_path / "host-0" / "host-0.yaml").read_text())
        key = make_key(operator_yaml, "tester")
        a, b, c = (Api(replica.url, key) for replica in replicas)

        text = " ".join(f"Line {i}: the heron on host A waits by reed bed {i % 5}." for i in range(60))
        uploaded = a.post("/files", files={"file": ("notes.txt", text.encode())}, data={"purpose": "assistants"})
        store = b.post("/vector_stores", json={"name": "across hosts", "provider_id": "pgvector"})
        b.post(f"/vector_stores/{store['id']}/files", json={"file_id": uploaded["id"]})
        deadline = time.monotonic() + INGESTED_WITHIN_SECONDS
        while (status := b.get(f"/vector_stores/{store['id']}/files/{uploaded['id']}")["status"]) == "in_progress":
            assert time.monotonic() < deadline, "the file was never ingested"
            time.sleep(0.2)
        assert status == "completed"
        found = c.post(f"/vector_stores/{store['id']}/search", json={"query": "heron reed bed 3"})
        assert found["data"] and all(hit["file_id"] == uploaded["id"] for hit in found["data"])
        assert c.raw("GET", f"/files/{uploaded['id']}/content").content == text.encode()
        a.raw("DELETE", f"/files/{uploaded['id']}")
        assert c.raw("GET", f"/files/{uploaded['id']}").status_code == 404
        assert not c.post(f"/vector_stores/{store['id']}/search", json={"query": "heron"})["data"]

        # A key's daily limit counts in Redis: requests to any host use up the same allowance.
        wait_for_a_fresh_day_window()
        limited_key = make_key(operator_yaml, "limited", f"requests_per_day={REQUESTS_PER_DAY}")
        limited = [Api(replica.url, limited_key) for replica in replicas]
        for api in limited:
            api.get("/models")
        refused = limited[0].raw("GET", "/models")
        assert refused.status_code == 429, refused.text
        assert "requests per day" in refused.json()["error"]["message"]

        # Nothing went through a shared disk: the file's bytes are in no host's home.
        for home in homes:
            stored = [p for p in home.rglob("*") if p.is_file() and b"heron on host A" in p.read_bytes()]
            assert not stored, stored
    finally:
        for replica in replicas:
            replica.stop()
        for forwarder in forwarders:
            forwarder.close()
    for replica in replicas:
        assert "Traceback" not in replica.log(), replica.log()[-3000:]


class Api:
    """One host's API with a key: `get`/`post` expect a 200 and return the JSON body."""

    def __init__(self, url: str, key: str) -> None:
        self.url = url
        self.session = requests.Session()
        self.session.trust_env = False  # straight to the host's address, never through a configured proxy
        self.session.headers["Authorization"] = f"Bearer {key}"

    def raw(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return self.session.request(method, self.url + path, timeout=30, **kwargs)

    def get(self, path: str) -> Any:
        answer = self.raw("GET", path)
        assert answer.status_code == 200, (path, answer.text)
        return answer.json()

    def post(self, path: str, **kwargs: Any) -> Any:
        answer = self.raw("POST", path, **kwargs)
        assert answer.status_code == 200, (path, answer.text)
        return answer.json()
