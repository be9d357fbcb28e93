"""The README's Flower walk-through, run for real: `flower-superlink` (TLS from the key set,
SuperNode authentication), three `flower-supernode` processes with registered node keys, `flwr run`
of the app; the same style index and auditable epsilon reports as `fedstyle server/client`.
Skipped with a reason when flwr is not installed; slow (new processes per Flower message)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("flwr", reason="the Flower app needs the optional extra: pip install -e '.[flower]'")

from fedstyle_secure.cli.main import main
from fedstyle_secure.retrieval.index import StyleIndex
from fedstyle_secure.transport.processes import free_port

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "run_flower_federation.sh"
ARTISTS = ("artist_00", "artist_01", "artist_02")
REPORTS = ["round-0000.json", "round-0001.json", "round-0002.json"]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_readme_flower_walkthrough_builds_the_index_and_auditable_reports(tmp_path, feature_cache):
    work = tmp_path / "flower"
    environment = {**os.environ, "WORK": str(work), "BIN": str(Path(sys.executable).parent)}
    environment |= {"PORT": str(free_port()), "FEDSTYLE_CACHE": str(feature_cache)}
    done = subprocess.run(["bash", str(SCRIPT), "3", "2", "8"], env=environment, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    server = work / "server"
    assert sorted(StyleIndex.load(server / "index").artists) == list(ARTISTS)
    for artist in ARTISTS:
        assert sorted(p.name for p in (server / "reports" / artist).glob("round-*.json")) == REPORTS
        final = json.loads((server / "reports" / artist / REPORTS[-1]).read_text())
        assert 0 < final["epsilon"]["prv"] <= 8.0 and final["final_round"] == 2
        own = work / artist / "reports" / artist / REPORTS[-1]  # the artist's own copy, from its state folder
        assert own.exists()
    assert main(["audit", str(server / "reports"), "--keys", str(work / "keys")]) == 0
