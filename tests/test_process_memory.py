"""An artist process's memory: :func:`call_in_fresh_process` and the compact-memory build of an
artist's inputs in a child process (``[client] compact_memory``)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from fedstyle_secure.data.public import default_public_set, public_set_name
from fedstyle_secure.data.synth import write_synthetic_folder
from fedstyle_secure.errors import ConfigError
from fedstyle_secure.memory import MALLOC_ARENAS, call_in_fresh_process


def test_a_fresh_process_returns_the_result_from_another_process() -> None:
    assert call_in_fresh_process(math.factorial, 25) == math.factorial(25)
    assert call_in_fresh_process(os.getpid) != os.getpid()


def test_an_exception_in_the_child_is_raised_in_the_caller() -> None:
    with pytest.raises(ValueError, match="invalid literal"):
        call_in_fresh_process(int, "not a number")
    with pytest.raises(ConfigError, match="client.data"):
        call_in_fresh_process(_raise_config_error)


def test_a_child_that_dies_without_answering_fails_closed() -> None:
    with pytest.raises(ChildProcessError, match="exit status 3"):
        call_in_fresh_process(os._exit, 3)


def test_arguments_that_do_not_pickle_are_refused_before_any_child_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_child(*args: object, **kwargs: object) -> None:  # FAKE Popen: starting a child fails the test
        raise AssertionError("a child was started for a call that cannot be sent to it")

    monkeypatch.setattr(subprocess, "Popen", no_child)
    with pytest.raises((AttributeError, TypeError)):  # a local function does not pickle
        call_in_fresh_process(lambda: 1)


def _onednn_after_compacting() -> tuple[bool, bool]:
    import torch

    from fedstyle_secure.memory import compact_this_process

    before = bool(torch.backends.mkldnn.enabled)  # a bool at run time (a ContextProp to the type checker)
    compact_this_process()
    return before, bool(torch.backends.mkldnn.enabled)


def test_compact_memory_turns_onednn_off_for_the_whole_process() -> None:
    """``[client] compact_memory`` runs torch's native kernels (oneDNN's touch 3.6 MB more of
    libtorch); checked in a fresh process, since the switch is process-wide."""
    assert call_in_fresh_process(_onednn_after_compacting) == (True, False)


_ARTIST_IMPORTS = """
import json, sys
from fedstyle_secure.cli.main import main
from fedstyle_secure.secure.keys.keystore import load_artist_keys
keys = load_artist_keys(sys.argv[1], "artist_a")
print(json.dumps({"tenseal": "tenseal" in sys.modules, "secret": keys.ckks.has_secret_key}))
"""


def test_an_artist_that_runs_no_ckks_round_never_loads_tenseal(keys: Path) -> None:
    """The command line and an artist's key store leave TenSEAL unloaded (its import and the parsed
    secret context: ~10 MB resident) until a CKKS round uses the context; checked in a fresh process."""
    out = subprocess.run(
        [sys.executable, "-c", _ARTIST_IMPORTS, str(keys)], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"tenseal": False, "secret": True}


_ARENAS = """
import ctypes, sys, tempfile, threading
from fedstyle_secure.memory import limit_malloc_arenas
if sys.argv[1] == "limit":
    limit_malloc_arenas()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_void_p]
libc.fopen.restype, libc.fclose.argtypes = ctypes.c_void_p, [ctypes.c_void_p]
libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
together = threading.Barrier(8)
def allocate():
    together.wait()  # all eight threads allocate at once
    blocks = [libc.malloc(4096) for _ in range(64)]
    together.wait()
    for block in blocks:
        libc.free(block)
threads = [threading.Thread(target=allocate) for _ in range(8)]
for t in threads:
    t.start()
for t in threads:
    t.join()
with tempfile.NamedTemporaryFile(suffix=".xml") as out:
    stream = libc.fopen(out.name.encode(), b"w")
    libc.malloc_info(0, stream)
    libc.fclose(stream)
    print(open(out.name).read().count("<heap nr="))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_limit_malloc_arenas_caps_the_arenas_threads_create() -> None:
    """Eight threads allocating at once get arenas of their own by default, at most
    :data:`MALLOC_ARENAS` after :func:`limit_malloc_arenas` (what the server and a compact-memory
    artist call); in fresh processes, since the setting is process-wide."""
    counts = {}
    for mode in ("default", "limit"):
        out = subprocess.run([sys.executable, "-c", _ARENAS, mode], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-3000:]
        counts[mode] = int(out.stdout.split()[-1])
    assert counts["limit"] <= MALLOC_ARENAS < counts["default"]


def _raise_config_error() -> None:
    raise ConfigError("client.data: no such folder")


_COMPACT_BUILD = """
import json, sys
from pathlib import Path
import numpy as np, torch
from fedstyle_secure.transport.artist.runner import announced_public_set, build_artist_inputs, build_style_client
from fedstyle_secure.transport.config import ClientConfig
from fedstyle_secure.transport.wire import pb

root, public, cache = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
plan = pb.RoundPlan(round_id=1, algorithm="fedstyle", seed=0, embedding_dim=128, total_rounds=2)
plan.public_set.name = public
config = ClientConfig(keys=root / "no-keys", data=root / "data", cache_dir=cache, compact_memory=True)
roster = ("artist_00", "artist_01")
client = build_style_client(config, "artist_01", roster, plan)
backbone_loaded = any(m.startswith("efficientnet") for m in sys.modules)  # imported to build the backbone
pillow_loaded = "PIL" in sys.modules  # imported to decode or draw pixels, which only the child does
inputs = build_artist_inputs(config, len(roster), plan, announced_public_set(plan))  # here: the cache is warm now
same_model = all(
    torch.equal(a, b) for a, b in zip(client.model.state_dict().values(), inputs.model.state_dict().values())
)
print(json.dumps({
    "backbone": backbone_loaded,
    "pillow": pillow_loaded,
    "same_bank": bool(np.array_equal(client.data.bank.views, inputs.bank.views)),
    "same_public": bool(torch.equal(client.public_inputs, inputs.public.originals())),
    "same_model": same_model,
    "artworks": len(client.data.bank),
}))
"""


def test_compact_memory_builds_the_same_inputs_without_the_backbone_in_the_artist_process(
    tmp_path: Path, feature_cache: Path
) -> None:
    """With ``compact_memory`` the artist process (a fresh interpreter; artworks no other test uses, so
    their features are not cached) never loads the backbone nor Pillow (2 MB): its child decodes and
    extracts, and the inputs equal an in-process build's."""
    write_synthetic_folder(tmp_path / "all", 2, 4, seed=913)
    (tmp_path / "data").mkdir()
    name = sorted(p.name for p in (tmp_path / "all").iterdir())[1]
    (tmp_path / "data" / name).symlink_to(tmp_path / "all" / name, target_is_directory=True)
    public = public_set_name(default_public_set())
    out = subprocess.run(
        [sys.executable, "-c", _COMPACT_BUILD, str(tmp_path), public, str(feature_cache)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert not result["backbone"], "the backbone ran in the artist process"
    assert not result["pillow"], "the artist process imported Pillow"
    assert result == {**result, "same_bank": True, "same_public": True, "same_model": True, "artworks": 4}


_COMPACT_DP_PLAN = """
import json, sys
from fedstyle_secure.privacy.accounting import compute_epsilon, known_epsilons, sampled_gaussians
from fedstyle_secure.privacy.plan import DpConfig
from fedstyle_secure.privacy.reports import reported_accountants
from fedstyle_secure.training.local import LocalConfig
from fedstyle_secure.transport.artist.privacy import plan_apart

plan = plan_apart(DpConfig(epsilon=8.0), 12, LocalConfig(), 5, frozenset({1, 2}))
refreshes = plan.round_mechanisms(1) + plan.round_mechanisms(2)  # no DP-SGD below the threshold
final = plan.round_mechanisms(5)
setup = plan.setup_mechanisms()  # the planning size's count, charged first
reachable = [setup + refreshes[:k] + tail for k in range(3) for tail in ([], final)]
known = known_epsilons()
all_known = all(  # under the ledger's accountant and the others its reports state
    (accountant, tuple(sampled_gaussians(h)), plan.delta) in known
    for h in reachable
    for accountant in reported_accountants(plan.accountant)
)
charged = [compute_epsilon(h, plan.delta, plan.accountant) for h in reachable]
loaded_after_charges = "opacus" in sys.modules
unplanned = compute_epsilon(final + final, plan.delta, plan.accountant)  # not known: a child computes it
print(json.dumps({
    "all_known": all_known, "charged": charged, "unplanned": unplanned,
    "opacus": loaded_after_charges or "opacus" in sys.modules,
}))
"""


def test_a_compact_memory_dp_artist_computes_its_epsilons_without_opacus_and_exactly(tmp_path: Path) -> None:
    """A DP artist below the DP-SGD threshold with ``compact_memory`` (a fresh interpreter): the plan
    is calibrated in a child, which also evaluates every ledger the artist can reach (any number of
    its planned releases); an epsilon nobody computed yet comes from another child; Opacus never
    enters the artist process, and every value equals this process's own computation with Opacus."""
    from fedstyle_secure.privacy.accounting import compute_epsilon
    from fedstyle_secure.privacy.plan import DpConfig, plan_participation
    from fedstyle_secure.training.local import LocalConfig

    out = subprocess.run(
        [sys.executable, "-c", _COMPACT_DP_PLAN], capture_output=True, text=True, timeout=600, cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr[-3000:]
    apart = json.loads(out.stdout.strip().splitlines()[-1])
    assert apart["opacus"] is False, "the artist process imported Opacus"
    assert apart["all_known"], "a charge the artist can reach was not evaluated with the plan"
    here = plan_participation(DpConfig(epsilon=8.0), 12, LocalConfig(), 5, frozenset({1, 2}))
    refreshes, final = here.round_mechanisms(1) + here.round_mechanisms(2), here.round_mechanisms(5)
    setup = here.setup_mechanisms()
    reachable = [setup + refreshes[:k] + tail for k in range(3) for tail in ([], final)]
    assert apart["charged"] == [compute_epsilon(h, here.delta, here.accountant) for h in reachable]
    assert max(apart["charged"]) <= 8.0
    assert apart["unplanned"] == compute_epsilon(final + final, here.delta, here.accountant) > 8.0


def test_a_child_that_dies_while_answering_fails_closed() -> None:
    with pytest.raises(ChildProcessError, match="exit status 4"):
        call_in_fresh_process(_answer_half_and_die)


def _answer_half_and_die() -> None:
    """Write the first bytes of an answer to the parent's pipe (the fd the child was given), then die."""
    import pickle

    os.write(_answer_fd(), pickle.dumps((True, list(range(1000))))[:20])
    os._exit(4)


def _answer_fd() -> int:
    """The pipe :func:`call_in_fresh_process` passed this child: its only pipe above stderr."""
    import stat

    pipes = [int(fd) for fd in os.listdir("/proc/self/fd") if int(fd) > 2 and _is_pipe(int(fd), stat.S_ISFIFO)]
    assert len(pipes) == 1, pipes
    return pipes[0]


def _is_pipe(fd: int, is_fifo: Callable[[int], bool]) -> bool:
    try:
        return is_fifo(os.fstat(fd).st_mode)
    except OSError:
        return False


def test_evicting_cached_libraries_drops_pages_of_shared_libraries_only_and_keeps_them_intact(tmp_path: Path) -> None:
    """``make setup``'s last step: every ``*.so*`` file under the folder is flushed and its cached
    pages dropped (what that does to resident memory is measured in docs/artist_memory.md; page-cache
    residency is not observable from Python, so this checks the walk and that nothing is altered)."""
    from fedstyle_secure.memory import evict_cached_libraries

    (tmp_path / "lib" / "pkg").mkdir(parents=True)
    libraries = {tmp_path / "lib" / "pkg" / "_core.cpython-311-x86_64-linux-gnu.so": b"\x7fELF" + bytes(5000)}
    libraries[tmp_path / "lib" / "libtorch_cpu.so.2"] = os.urandom(3000)
    for path, content in libraries.items():
        path.write_bytes(content)
    (tmp_path / "lib" / "module.py").write_text("x = 1\n")  # not a shared library
    (tmp_path / "lib" / "link.so").symlink_to(tmp_path / "lib" / "libtorch_cpu.so.2")  # counted once
    assert evict_cached_libraries(tmp_path) == (2, 8004)
    assert all(path.read_bytes() == content for path, content in libraries.items())
