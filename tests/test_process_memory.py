"""An artist process's memory: :func:`call_in_fresh_process` and the compact-memory build of an
artist's inputs in a child process (``[client] compact_memory``)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fedstyle_secure.data.public import default_public_set, public_set_name
from fedstyle_secure.data.synth import write_synthetic_folder
from fedstyle_secure.errors import ConfigError
from fedstyle_secure.memory import call_in_fresh_process


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


def test_arguments_that_do_not_pickle_are_refused_before_any_child_starts() -> None:
    with pytest.raises((AttributeError, TypeError)):  # a local function does not pickle
        call_in_fresh_process(lambda: 1)


def _raise_config_error() -> None:
    raise ConfigError("client.data: no such folder")


_COMPACT_BUILD = """
import json, sys
from pathlib import Path
import numpy as np, torch
from fedstyle_secure.transport.artist.runner import build_artist_inputs, build_style_client
from fedstyle_secure.transport.config import ClientConfig
from fedstyle_secure.transport.wire import pb

root, public, cache = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
plan = pb.RoundPlan(round_id=1, algorithm="fedstyle", seed=0, embedding_dim=128, total_rounds=2)
plan.public_set.name = public
config = ClientConfig(keys=root / "no-keys", data=root / "data", cache_dir=cache, compact_memory=True)
roster = ("artist_00", "artist_01")
client = build_style_client(config, "artist_01", roster, plan)
backbone_loaded = any(m.startswith("efficientnet") for m in sys.modules)  # imported to build the backbone
inputs = build_artist_inputs(config, len(roster), plan)  # in this process: the cache is warm now
same_model = all(
    torch.equal(a, b) for a, b in zip(client.model.state_dict().values(), inputs.model.state_dict().values())
)
print(json.dumps({
    "backbone": backbone_loaded,
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
    their features are not cached) never loads the backbone: its child extracts, and the inputs
    equal an in-process build's."""
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
    assert result == {**result, "same_bank": True, "same_public": True, "same_model": True, "artworks": 4}
