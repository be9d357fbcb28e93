"""A style index folder may come from elsewhere (``fedstyle query --index DIR``): every crafted file is
refused with a ModelError naming the file and what is wrong, before any large allocation -- never a
traceback, a multi-GB allocation or a silently wrong ranking (a sixth review's finding 5)."""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from fedstyle_secure.cli.main import main
from fedstyle_secure.errors import ModelError
from fedstyle_secure.models.factory import EncoderConfig, make_model
from fedstyle_secure.retrieval.index import MAX_INDEX_JSON_BYTES, StyleIndex, build_index


@pytest.fixture(scope="module")
def genuine(tiny_federation, tmp_path_factory) -> Path:
    data = tiny_federation
    torch.manual_seed(0)
    model = make_model(EncoderConfig(), data.bank, data.public, None).eval()
    rng = np.random.default_rng(0)
    index = build_index(
        model,
        EncoderConfig(),
        data.artists,
        rng.normal(size=(len(data.artists), EncoderConfig().embedding_dim)),
        rng.normal(size=(6, EncoderConfig().embedding_dim)).astype(np.float32),
        np.arange(6) % len(data.artists),
        tuple(f"art-{i}" for i in range(6)),
    )
    folder = tmp_path_factory.mktemp("index") / "genuine"
    index.save(folder)
    return folder


def _json(name: str, change: Callable[[dict], object]) -> Callable[[Path], None]:
    def tamper(folder: Path) -> None:
        meta = json.loads((folder / name).read_text())
        change(meta)
        (folder / name).write_text(json.dumps(meta))

    return tamper


def _arrays(name: str, change: Callable[[dict[str, np.ndarray]], object]) -> Callable[[Path], None]:
    def tamper(folder: Path) -> None:
        with np.load(folder / name) as npz:
            arrays = {k: npz[k] for k in npz.files}
        change(arrays)
        np.savez(folder / name, **arrays)

    return tamper


def _huge_header(folder: Path) -> None:
    """A small archive whose one array announces 4.5 GiB (NumPy would allocate it before reading)."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (300_000, 4_000)})
    with zipfile.ZipFile(folder / "index.npz", "w") as archive:
        archive.writestr("prototypes.npy", header.getvalue() + b"\0" * 1024)


def _deep(name: str, depth: int) -> Callable[[Path], None]:
    """``name`` with a field nested ``depth`` levels deep (200,000: a RecursionError traceback once)."""

    def tamper(folder: Path) -> None:
        text = (folder / name).read_text().rstrip()[:-1]
        (folder / name).write_text(text + ', "x": ' + "[" * depth + "]" * depth + "}")

    return tamper


def _sparse(name: str, size: int) -> Callable[[Path], None]:
    """``name`` replaced by a sparse file of ``size`` bytes (gigabytes cost no disk, but were read whole)."""

    def tamper(folder: Path) -> None:
        with open(folder / name, "wb") as handle:
            handle.truncate(size)

    return tamper


CRAFTED = {
    "index.json nested 200,000 deep": (_deep("index.json", 200_000), "maximum recursion depth"),
    "index.json nested 40 deep": (_deep("index.json", 40), "nested more than 32 levels"),
    "encoder.json nested 40 deep": (_deep("encoder.json", 40), "nested more than 32 levels"),
    "a sparse index.json past its cap": (_sparse("index.json", MAX_INDEX_JSON_BYTES + 1), "larger than 268435456"),
    "a sparse encoder.json of 3 GB": (_sparse("encoder.json", 3 << 30), "larger than 65536 bytes"),
    "hidden width of 4 M": (_json("encoder.json", lambda m: m.update(hidden_dim=4_000_000)), "hidden_dim"),
    "embedding width of 2 M": (_json("encoder.json", lambda m: m.update(embedding_dim=2_000_000)), "embedding_dim"),
    "unknown head": (_json("encoder.json", lambda m: m.update(head="transformer")), "head: must be one of"),
    "a string width": (_json("encoder.json", lambda m: m.update(hidden_dim="512")), "hidden_dim"),
    "no artists": (_json("index.json", lambda m: m.pop("artists")), "artists must be a list"),
    "artists as objects": (_json("index.json", lambda m: m.update(artists=[{"a": 1}] * 5)), "artists must be"),
    "an artist twice": (_json("index.json", lambda m: m.update(artists=["x"] * 5)), "lists a name twice"),
    "index.json not an object": (lambda f: (f / "index.json").write_text("[1, 2]"), "unknown format"),
    "a misspelt field": (
        _json("index.json", lambda m: m.update(test_time_view=4)),
        r"unknown field\(s\) \['test_time_view'\]",
    ),
    "prototypes of another width": (
        _arrays("index.npz", lambda a: a.update(prototypes=np.ones((5, 7), np.float32))),
        "width 128",
    ),
    "one prototype row short": (_arrays("index.npz", lambda a: a.update(prototypes=a["prototypes"][:4])), "4 rows"),
    "an infinite prototype entry": (
        _arrays("index.npz", lambda a: a["prototypes"].__setitem__((0, 0), np.inf)),
        "NaN or infinite",
    ),
    "a zero prototype row": (
        _arrays("index.npz", lambda a: a["prototypes"].__setitem__(0, 0.0)),
        "prototypes holds a zero row",
    ),
    "an artist name with a terminal escape": (
        _json("index.json", lambda m: m["artists"].__setitem__(0, "\x1b[2Jevil")),
        "control characters",
    ),
    "labels past the artists": (
        _arrays("index.npz", lambda a: a.update(artwork_labels=np.full(6, 99))),
        "must index the 5 artists",
    ),
    "labels without embeddings": (_arrays("index.npz", lambda a: a.pop("artwork_embeddings")), "come together"),
    "a 4.5 GiB array header": (_huge_header, "past 1,073,741,824 bytes"),
    "an object array": (
        _arrays("index.npz", lambda a: a.update(prototypes=np.array(["x"] * 5))),
        "not a plain numeric type",
    ),
    "a NaN weight": (_arrays("encoder.npz", lambda a: next(iter(a.values())).flat.__setitem__(0, np.nan)), "NaN"),
}


@pytest.mark.parametrize("crafted", sorted(CRAFTED))
def test_a_crafted_index_is_refused_naming_what_is_wrong(genuine, tmp_path, crafted):
    folder = Path(shutil.copytree(genuine, tmp_path / "index"))
    tamper, words = CRAFTED[crafted]
    tamper(folder)
    with pytest.raises(ModelError, match=words):
        StyleIndex.load(folder)


def test_the_genuine_index_loads_and_the_query_command_reports_a_crafted_one(genuine, tmp_path, capsys):
    index = StyleIndex.load(genuine)
    assert index.prototypes.shape == (5, 128) and index.artwork_labels is not None
    folder = Path(shutil.copytree(genuine, tmp_path / "index"))
    CRAFTED["hidden width of 4 M"][0](folder)
    image = tmp_path / "query.png"
    from PIL import Image

    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(image)
    assert main(["query", str(image), "--index", str(folder)]) != 0
    err = capsys.readouterr().err
    assert "hidden_dim: must be less than or equal to 8192" in err and "Traceback" not in err
