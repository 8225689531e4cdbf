"""`lamina db status` / `lamina db upgrade` for operators who migrate out of band, with `migrate: false`: a
replica refuses a database whose schema is behind, naming the command, and starts once it has run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from lamina_storage_postgres import PostgresStorageConfig, open_storage


def lamina_db(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([Path(sys.executable).parent / "lamina", "db", *args], capture_output=True, text=True)


@pytest.mark.slow  # five runs of the `lamina` CLI
async def test_migrating_out_of_band(postgres_url: str, tmp_path: Path) -> None:
    config = PostgresStorageConfig(url=postgres_url, migrate=False)
    with pytest.raises(RuntimeError, match="lamina db upgrade"):
        await open_storage(config, tmp_path)

    before = lamina_db("status", "--url", postgres_url)
    assert before.returncode == 0, before.stderr
    assert "storage      version 0 of 1: behind (run `lamina db upgrade`)" in before.stdout

    # This PostgreSQL has no pgvector: that component fails, and says so, while the others migrate.
    everything = lamina_db("upgrade", "--url", postgres_url)
    assert everything.returncode == 1, everything.stdout + everything.stderr
    assert "storage      version 1 of 1: current, applied [1]" in everything.stdout
    assert "pgvector     version 0 of 1: behind (run `lamina db upgrade`), FAILED:" in everything.stdout
    chosen = lamina_db("upgrade", "--url", postgres_url, "storage", "files")
    assert chosen.returncode == 0, chosen.stdout + chosen.stderr
    assert "applied" not in chosen.stdout and "files        version 1 of 1: current" in chosen.stdout
    assert lamina_db("upgrade", "--url", postgres_url, "nonsense").returncode == 2

    storage = await open_storage(config, tmp_path)
    try:
        await storage.kv.set("k", 1)
        assert await storage.kv.get("k") == 1
    finally:
        await storage.close()


def test_db_commands_need_a_database() -> None:
    result = subprocess.run(
        [Path(sys.executable).parent / "lamina", "db", "status"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert result.returncode != 0 and "POSTGRES_URL" in result.stderr
