"""Bad input to the ``fedstyle`` command line gets a clear error naming what was wrong, never a
traceback, a silently ignored option or a stale result (a helper's review of 2026-11-30, played
through the real entry point; each test failed on the code before its fix)."""

from __future__ import annotations

import json
import math

import pytest

from fedstyle_secure.cli.main import main
from fedstyle_secure.errors import ConfigError
from fedstyle_secure.experiments.cells import REFERENCE
from fedstyle_secure.experiments.sweep import METRICS, CellResult, CellSpec

SWEEP_TINY = [
    "sweep",
    "--synthetic",
    "--artists",
    "3",
    "--per-artist",
    "6",
    "--rounds",
    "1",
    "--algorithms",
    "fedavg",
    "--epsilons",
    "inf",
    "--seeds",
    "1",
]


def _fake_runner(calls: list):
    def make(args):
        def run(spec: CellSpec) -> CellResult:
            calls.append((spec.algorithm, args.public_pretrain_steps))
            return CellResult({m: 0.5 for m in METRICS}, {})

        return run

    return make


def test_sweep_resume_reuses_cells_computed_with_another_public_pretrain_steps(tmp_path, monkeypatch, capsys):
    """--public-pretrain-steps changes what every trained cell computes (simulation_config_from_args
    passes it to the simulation), but it is not part of the cell key: a rerun with another value
    silently reports the old cells' metrics."""
    calls: list = []
    monkeypatch.setattr("fedstyle_secure.cli.sweep.make_cell_runner", _fake_runner(calls))
    out = tmp_path / "sweep"
    assert main([*SWEEP_TINY, "--out", str(out), "--public-pretrain-steps", "0"]) == 0
    first = [c for c in calls if c[0] == "fedavg"]
    assert first == [("fedavg", 0)]
    calls.clear()
    assert main([*SWEEP_TINY, "--out", str(out), "--public-pretrain-steps", "500"]) == 0
    # the fedavg cell must be recomputed with 500 warm-start steps
    assert ("fedavg", 500) in calls, f"stale cell reused; second run computed only {calls}"


@pytest.mark.parametrize(
    "content",
    ["[]", '{"metrics": "x"}', '{"metrics": {}}', '{"metrics": {"artist_accuracy": "high"}}', "null"],
)
def test_sweep_resume_sets_a_tampered_cell_file_aside_and_recomputes_it(tmp_path, monkeypatch, capsys, content):
    """A damaged cell file stopped the whole sweep ("delete it to recompute"); it is now moved to
    ``<name>.corrupt`` (nothing deleted) with a warning naming it, and the cell is computed again."""
    calls: list = []
    monkeypatch.setattr("fedstyle_secure.cli.sweep.make_cell_runner", _fake_runner(calls))
    out = tmp_path / "sweep"
    assert main([*SWEEP_TINY, "--out", str(out)]) == 0
    cells = sorted((out / "cells").glob("*.json"))
    assert cells
    for cell in cells:
        cell.write_text(content)
    calls.clear()
    capsys.readouterr()
    assert main([*SWEEP_TINY, "--out", str(out)]) == 0  # must not raise a traceback or stop
    err = capsys.readouterr().err
    assert len(calls) == len(cells)
    for cell in cells:
        assert (cell.parent / f"{cell.name}.corrupt").read_text() == content and f"{cell} is damaged" in err
        assert json.loads(cell.read_text())["metrics"]["artist_accuracy"] == 0.5


def test_a_sweeps_reference_row_is_not_recomputed_for_a_training_option(tmp_path, monkeypatch):
    """The frozen + DP prototypes row trains nothing, yet its cells were keyed on --lr and every other
    training option, so changing one recomputed it; it is keyed on the data and DP options it reads."""
    calls: list = []
    monkeypatch.setattr("fedstyle_secure.cli.sweep.make_cell_runner", _fake_runner(calls))
    out = tmp_path / "sweep"
    assert main([*SWEEP_TINY, "--out", str(out), "--lr", "0.1"]) == 0
    assert {c[0] for c in calls} == {"fedavg", REFERENCE}
    calls.clear()
    assert main([*SWEEP_TINY, "--out", str(out), "--lr", "0.2"]) == 0
    assert [c[0] for c in calls] == ["fedavg"]
    calls.clear()
    assert main([*SWEEP_TINY, "--out", str(out), "--lr", "0.2", "--query-fraction", "0.5"]) == 0
    assert sorted(c[0] for c in calls) == sorted(["fedavg", REFERENCE])  # the split: both recomputed


SIM_TINY = [
    "simulate",
    "--synthetic",
    "--artists",
    "3",
    "--per-artist",
    "4",
    "--rounds",
    "1",
    "--local-epochs",
    "1",
    "--no-progress",
]


def _no_traceback_error(capsys, argv, words):
    code: int | str | None
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's usage error: status 2, the message on stderr
        code = exc.code
    except Exception as exc:  # a user error escaping as a traceback is what these tests catch
        pytest.fail(f"{argv}: traceback instead of a clear error: {type(exc).__name__}: {exc}")
    err = capsys.readouterr().err
    assert code != 0 and words in err, err


def test_simulate_negative_seed_is_a_clear_error(tmp_path, capsys):
    _no_traceback_error(capsys, [*SIM_TINY, "--seed", "-1", "--out", str(tmp_path / "r.json")], "--seed")


def test_synth_negative_seed_is_a_clear_error(tmp_path, capsys):
    _no_traceback_error(
        capsys, ["synth", "--out", str(tmp_path / "s"), "--artists", "1", "--per-artist", "1", "--seed", "-1"], "--seed"
    )


def test_synth_out_naming_a_file_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    _no_traceback_error(
        capsys, ["synth", "--out", str(tmp_path / "file"), "--artists", "1", "--per-artist", "1"], "file"
    )


def test_simulate_batch_size_zero_is_a_clear_error(tmp_path, capsys):
    _no_traceback_error(capsys, [*SIM_TINY, "--batch-size", "0", "--out", str(tmp_path / "r.json")], "--batch-size")


def test_simulate_negative_batch_size_is_refused_not_a_run_that_never_trains(tmp_path, capsys):
    """range(0, n, -2) is empty: no local step ever runs, mean_loss is NaN, and the command exits 0 with
    the untrained encoder's metrics as the result."""
    out = tmp_path / "r.json"
    code = main([*SIM_TINY, "--batch-size", "-2", "--out", str(out)])
    if code == 0:
        history = json.loads(out.read_text())["history"]
        pytest.fail(f"--batch-size -2 accepted; round losses {[h['mean_loss'] for h in history]}")


def test_simulate_tau_zero_is_a_clear_error(tmp_path, capsys):
    _no_traceback_error(capsys, [*SIM_TINY, "--tau", "0", "--out", str(tmp_path / "r.json")], "--tau")


def test_simulate_negative_tau_is_refused(tmp_path, capsys):
    """A negative contrastive temperature inverts the loss (pushes artworks away from their own artist)."""
    code = main([*SIM_TINY, "--tau", "-1", "--out", str(tmp_path / "r.json")])
    assert code != 0, "--tau -1 silently accepted"


def test_simulate_on_a_non_utf8_artist_folder_name_is_a_clear_error(tmp_path, capsys):
    """An artist folder whose name is not UTF-8 (surrogate-escaped by Python) crashes the split's
    per-artist seed (hashlib of f"{seed}:{artist}".encode()) with a UnicodeEncodeError traceback."""
    import os

    data = tmp_path / "data"
    assert main(["synth", "--out", str(data), "--artists", "2", "--per-artist", "3"]) == 0
    os.rename(os.fsencode(data / "artist_01"), os.fsencode(data) + b"/Bad\xffName")
    capsys.readouterr()
    _no_traceback_error(
        capsys,
        [
            *SIM_TINY[:1],
            "--data",
            str(data),
            "--rounds",
            "1",
            "--local-epochs",
            "1",
            "--no-progress",
            "--out",
            str(tmp_path / "r.json"),
        ],
        "Name",
    )


def test_keys_init_with_a_huge_validity_is_a_clear_error(tmp_path, capsys):
    """--days has a lower bound (>= 1) but no upper one: 100000000 days overflows datetime."""
    _no_traceback_error(
        capsys, ["keys", "init", "--out", str(tmp_path / "k"), "--count", "2", "--days", "100000000"], "--days"
    )


def test_keys_init_with_a_huge_count_is_refused_before_generating_keys(tmp_path, monkeypatch, capsys):
    """`keys init --count 1000000000` generated key sets until the disk was full (about 20 artists in
    0.4 s).  A fake key generator (named as such) stands guard, so the test cannot run for hours."""

    def fake_generate(*args, **kwargs):
        raise AssertionError("key generation started for a billion artists")

    monkeypatch.setattr("fedstyle_secure.secure.keys.keystore.generate_key_files", fake_generate)
    _no_traceback_error(capsys, ["keys", "init", "--out", str(tmp_path / "k"), "--count", "1000000000"], "--count")
    assert not (tmp_path / "k").exists()


def test_keys_init_with_too_many_named_artists_is_a_clear_error(tmp_path, capsys):
    names = ",".join(f"a{i}" for i in range(10_001))
    _no_traceback_error(capsys, ["keys", "init", "--out", str(tmp_path / "k"), "--artists", names], "at most 10000")


def test_simulate_with_a_huge_public_pretrain_steps_is_refused_before_training(tmp_path, monkeypatch, capsys):
    """`simulate --public-pretrain-steps 1000000000` ran the public warm start for days; a networked
    artist already refused a plan announcing more than MAX_PUBLIC_PRETRAIN_STEPS.  A fake warm start
    (named as such) stands guard, so the test cannot run for days."""

    def fake_pretrain(*args, **kwargs):
        raise AssertionError("the public warm start started a billion steps")

    monkeypatch.setattr("fedstyle_secure.training.pretrain.pretrain_on_public", fake_pretrain)
    argv = [*SIM_TINY, "--public-pretrain-steps", "1000000000", "--out", str(tmp_path / "r.json")]
    _no_traceback_error(capsys, argv, "--public-pretrain-steps")


def test_sweep_on_an_unreachable_ray_head_is_a_clear_error(tmp_path, monkeypatch, capsys):
    """`sweep --ray 127.0.0.1:1` (nothing listening) waited for the head without end, logging a Ray
    warning every 30 s.  A fake ``ray.init`` (named as such) stands guard, so the test cannot hang."""
    ray = pytest.importorskip("ray")

    def fake_init(*args, **kwargs):
        raise AssertionError("ray.init called on an unreachable head: it would wait forever")

    monkeypatch.setattr(ray, "init", fake_init)
    argv = [*SWEEP_TINY, "--out", str(tmp_path / "sweep"), "--ray", "127.0.0.1:1"]
    _no_traceback_error(capsys, argv, "cannot reach the Ray head at 127.0.0.1:1")


@pytest.mark.parametrize(
    ("option", "make_path", "words"),
    [
        ("--out", lambda tmp: tmp, "is a folder; expected a file"),
        ("--out", lambda tmp: tmp / "a-file" / "r.json", "a-file is not a folder"),
        ("--index-out", lambda tmp: tmp / "a-file", "is a file; expected a folder"),
    ],
)
def test_simulate_output_paths_are_checked_before_training(tmp_path, monkeypatch, capsys, option, make_path, words):
    """An --out that is a folder, or under a file, was found out only when the results were written,
    after the whole training.  A fake simulation (named as such) stands guard: it must never start."""
    (tmp_path / "a-file").write_text("not a folder")

    def fake_run_simulation(*args, **kwargs):
        raise AssertionError("training started before the output paths were checked")

    monkeypatch.setattr("fedstyle_secure.cli.simulate.run_simulation", fake_run_simulation)
    argv = [*SIM_TINY, "--out", str(tmp_path / "r.json"), option, str(make_path(tmp_path))]
    _no_traceback_error(capsys, argv, words)


def test_sweep_of_a_missing_data_folder_is_one_clear_error_not_a_failure_per_cell(tmp_path, capsys):
    """`sweep --data /nonexistent` printed one "cell failed" line per cell (27, each with its whole
    config), advised to rerun the same command and exited 1 (a helper's walkthrough, 2026-12-02)."""
    argv = ["sweep", "--data", str(tmp_path / "nonexistent"), "--rounds", "1", "--epsilons", "inf", "--seeds", "1"]
    code = main([*argv, "--algorithms", "fedavg", "--out", str(tmp_path / "sweep")])
    err = capsys.readouterr().err
    assert code == 2 and "does not exist" in err, err
    assert "cell failed" not in err and "rerun the same command" not in err, err


def test_sweep_out_that_is_a_file_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "README.md").write_text("a file")
    _no_traceback_error(capsys, [*SWEEP_TINY, "--out", str(tmp_path / "README.md")], "is a file; expected a folder")


def test_synth_into_a_folder_that_holds_artworks_is_refused(tmp_path, capsys):
    """A second `synth --out` into a folder made before overwrote some images and left the others:
    each artist folder then held two styles (a helper's walkthrough, 2026-12-02)."""
    out = tmp_path / "synth"
    assert main(["synth", "--out", str(out), "--artists", "2", "--per-artist", "3", "--seed", "1"]) == 0
    before = sorted(p.relative_to(out) for p in out.rglob("*.png"))
    _no_traceback_error(
        capsys, ["synth", "--out", str(out), "--artists", "1", "--per-artist", "2"], "not a new or empty"
    )
    assert sorted(p.relative_to(out) for p in out.rglob("*.png")) == before


@pytest.mark.parametrize(("option", "value"), [("--delta", "1e-6"), ("--reports-dir", "reports")])
def test_simulate_without_dp_refuses_dp_only_options_instead_of_ignoring_them(tmp_path, capsys, option, value):
    """Without --epsilon, --delta and --reports-dir were dropped in silence: no report, no folder
    (a helper's walkthrough, 2026-12-02); --noise-multiplier was already refused."""
    argv = [*SIM_TINY, "--out", str(tmp_path / "r.json"), option, str(tmp_path / value) if "dir" in option else value]
    _no_traceback_error(capsys, argv, f"{option} needs a finite --epsilon")
    assert not (tmp_path / "r.json").exists()


def test_demo_rerun_replaces_its_own_outputs_and_refuses_a_folder_of_other_files(tmp_path, monkeypatch, capsys):
    """A rerun of the demo into runs/demo left the earlier run's compare/*.json and machines/artist_03..07
    beside the new, smaller run's outputs, with no warning (a helper's walkthrough, 2026-12-02).  A
    fake harness (named as such) stops the demo right after it prepared its folder."""
    from fedstyle_secure.cli import demo

    def fake_federation(*args, **kwargs):
        raise ConfigError("stopped after the output folder was prepared")

    monkeypatch.setattr(demo, "federation_from_args", fake_federation)
    out = tmp_path / "demo"
    _no_traceback_error(capsys, ["demo", "--out", str(out)], "stopped after the output folder was prepared")
    (out / "compare").mkdir(parents=True)
    (out / "compare" / "fedstyle.json").write_text("{}")
    (out / "machines" / "artist_07").mkdir(parents=True)
    (out / "summary.json").write_text("{}")
    _no_traceback_error(capsys, ["demo", "--out", str(out)], "stopped after the output folder was prepared")
    assert [p.name for p in out.iterdir()] == [".fedstyle-demo"], "an earlier demo's outputs were left"
    (out / "notes.txt").write_text("mine")
    _no_traceback_error(capsys, ["demo", "--out", str(out)], "holds notes.txt, which no earlier demo marked")
    assert (out / "notes.txt").read_text() == "mine"
    # a folder of the user's that happens to hold a `reports` folder is not the demo's (a helper's red-team
    # review: it was emptied), even through a link
    project = tmp_path / "project"
    (project / "reports").mkdir(parents=True)
    (project / "reports" / "q3.xlsx").write_text("precious")
    (tmp_path / "link").symlink_to(project)
    _no_traceback_error(capsys, ["demo", "--out", str(tmp_path / "link")], "holds reports, which no earlier demo")
    assert (project / "reports" / "q3.xlsx").read_text() == "precious"


def test_audit_empirical_negative_seed_is_a_clear_error(capsys):
    _no_traceback_error(capsys, ["audit", "--empirical", "--seed", "-1"], "--seed")


def test_audit_of_reports_refuses_empirical_only_options_instead_of_ignoring_them(tmp_path, capsys):
    """`fedstyle audit DIR --epsilon 1` reads like "check these reports against a budget of 1": the
    reports claim ~8, yet the audit exits 0 "clean" -- --epsilon (and --canaries, --config, ...)
    only apply with --empirical and are silently dropped otherwise."""
    reports = tmp_path / "rep"
    run = [*SIM_TINY, "--epsilon", "8", "--out", str(tmp_path / "r.json"), "--reports-dir", str(reports)]
    assert main(run) == 0
    capsys.readouterr()
    code = main(["audit", str(reports), "--trust-manifest", "--epsilon", "1"])
    assert code != 0, "--epsilon 1 silently ignored: reports claiming ~8 audited clean"


def test_sweep_with_a_huge_seed_count_is_refused_before_enumerating_the_grid(tmp_path, monkeypatch, capsys):
    """`--seeds 1000000` (a 7-character argument) builds 9 M CellSpecs, each with its own copy of the
    config dict, and stats a cell file for each: measured 5.6 GB resident after 24 s, still growing,
    before any cell runs.  Guarded here so the test itself cannot blow up."""
    import fedstyle_secure.cli.sweep as sweep_cli

    def guarded(source, algorithms, epsilons, seeds, config):
        n = len(algorithms) * len(epsilons) * len(seeds)
        pytest.fail(f"no bound on the grid: enumerate_cells called for {n:,} cells")

    monkeypatch.setattr(sweep_cli, "enumerate_cells", guarded)
    code = main(
        [
            "sweep",
            "--synthetic",
            "--artists",
            "2",
            "--per-artist",
            "4",
            "--rounds",
            "1",
            "--seeds",
            "1000000",
            "--out",
            str(tmp_path / "sweep"),
        ]
    )
    assert code != 0 and "--seeds" in capsys.readouterr().err


def test_launch_budget_for_an_artist_not_in_the_data_is_refused_not_ignored(tmp_path, capsys):
    """`--budget Artist_00=0.5` (case typo of artist_00) is silently dropped: start_loopback only looks
    budgets up by the folders' names, so artist_00 spends ~7.96 of the default 8.0 and the command
    exits 0 -- a per-artist privacy budget the operator asked for is not enforced."""
    data = tmp_path / "data"
    assert main(["synth", "--out", str(data), "--artists", "3", "--per-artist", "6"]) == 0
    capsys.readouterr()
    code = main(
        [
            "launch",
            "--data",
            str(data),
            "--work",
            str(tmp_path / "work"),
            "--rounds",
            "1",
            "--secure",
            "none",
            "--epsilon",
            "8",
            "--budget",
            "Artist_00=0.5",
            "--phase-seconds",
            "60",
            "--timeout",
            "200",
        ]
    )
    out = capsys.readouterr().out
    if code == 0:
        spent = json.loads(out[out.index("{") :])["privacy"]["artist_00"]
        pytest.fail(f"--budget Artist_00=0.5 ignored; artist_00 ledger: {spent}")


def test_launch_work_naming_a_file_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "work").write_text("x")
    data = tmp_path / "data"
    assert main(["synth", "--out", str(data), "--artists", "2", "--per-artist", "3"]) == 0
    capsys.readouterr()
    _no_traceback_error(capsys, ["launch", "--data", str(data), "--work", str(tmp_path / "work")], "--work")


def test_simulate_with_a_nan_poisoned_feature_cache_recomputes_or_errors_clearly(tmp_path, capsys):
    """array_cache.py promises "a missing, truncated or unreadable entry is a miss, never an error", but
    build_input_bank (models/inputs.py read_cache) only checks an entry's shape: an entry of the right
    shape holding NaN is used and the run dies in the public whitening with numpy's LinAlgError."""
    import numpy as np

    cache = tmp_path / "cache"
    argv = [*SIM_TINY, "--cache-dir", str(cache)]
    assert main([*argv, "--out", str(tmp_path / "a.json")]) == 0
    entries = list(cache.glob("efficientnet*/*.npy"))
    assert entries
    for entry in entries:
        array = np.load(entry)
        array[:] = np.nan
        np.save(entry, array)
    capsys.readouterr()
    try:
        code = main([*argv, "--out", str(tmp_path / "b.json")])
    except Exception as exc:
        pytest.fail(f"poisoned cache entry -> traceback: {type(exc).__name__}: {exc}")
    assert code == 0 or "cache" in capsys.readouterr().err


def test_simulate_cache_dir_naming_a_file_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "cfile").write_text("x")
    _no_traceback_error(
        capsys, [*SIM_TINY, "--cache-dir", str(tmp_path / "cfile"), "--out", str(tmp_path / "r.json")], "cfile"
    )


def test_sweep_resume_reuses_cells_computed_with_another_public_set_variable(tmp_path, monkeypatch):
    """The public alignment set comes from $FEDSTYLE_PUBLIC_SET when --public is absent (see --help),
    and it changes what every cell computes; the cell key holds only args.public (None), so a rerun
    under another public set silently reuses the old cells."""
    from fedstyle_secure.data.public import PUBLIC_SET_VARIABLE

    calls: list = []
    monkeypatch.setattr("fedstyle_secure.cli.sweep.make_cell_runner", _fake_runner(calls))
    out = tmp_path / "sweep"
    monkeypatch.setenv(PUBLIC_SET_VARIABLE, "generated:16")
    assert main([*SWEEP_TINY, "--out", str(out)]) == 0
    calls.clear()
    monkeypatch.setenv(PUBLIC_SET_VARIABLE, "generated:48")
    assert main([*SWEEP_TINY, "--out", str(out)]) == 0
    assert calls, "cells computed on generated:16 public images reused for a generated:48 sweep"


@pytest.mark.parametrize("command", ["server", "client"])
def test_config_that_is_not_utf8_is_a_clear_error(tmp_path, capsys, command):
    """transport/config.py _read catches FileNotFoundError and TOMLDecodeError only; tomllib decodes
    the bytes as UTF-8 first and its UnicodeDecodeError escapes."""
    config = tmp_path / "bad.toml"
    config.write_bytes(b'[server]\nkeys = "\xff"\n')
    _no_traceback_error(capsys, [command, "--config", str(config)], "bad.toml")


@pytest.mark.parametrize("command", ["server", "client"])
def test_config_naming_a_directory_is_a_clear_error(tmp_path, capsys, command):
    _no_traceback_error(capsys, [command, "--config", str(tmp_path)], str(tmp_path))


# ------------------------------------------------------------- a helper's CLI fuzz, 2026-12-02


def _special_file(tmp_path, kind: str, name: str):
    """A FIFO (reading it blocked forever, waiting for a writer) or a link to /dev/zero (read without
    end: 6.8 GB in 11 s as a key file) at ``tmp_path / name``."""
    import os

    path = tmp_path / name
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to("/dev/zero")
    return path


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["fifo", "devzero"])
@pytest.mark.parametrize("command", ["server", "client"])
def test_a_config_that_is_not_a_regular_file_is_refused_at_once(tmp_path, capsys, kind, command):
    config = _special_file(tmp_path, kind, "c.toml")
    _no_traceback_error(capsys, [command, "--config", str(config)], "is not a regular file")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["fifo", "devzero"])
def test_a_key_file_or_image_that_is_not_a_regular_file_is_refused_at_once(tmp_path, capsys, kind):
    """A bundle's key file, a query image and an index archive replaced by a FIFO or a /dev/zero link."""
    import shutil

    from fedstyle_secure.secure.keys.keystore import CKKS_PUBLIC
    from fedstyle_secure.transport.loopback import write_fresh_keys

    keys = write_fresh_keys(tmp_path / "keys", ("artist_a", "artist_b"))
    copy = tmp_path / "copy"
    shutil.copytree(keys, copy)
    (copy / CKKS_PUBLIC).unlink()
    _special_file(copy, kind, CKKS_PUBLIC)
    _no_traceback_error(capsys, ["keys", "check", "--keys", str(copy), "--server"], "is not a regular file")
    image = _special_file(tmp_path, kind, "query.png")
    remote = ["--server", "127.0.0.1:9", "--keys", str(keys), "--buyer", "buyer"]  # the image is read first
    _no_traceback_error(capsys, ["query", str(image), *remote], "not a regular file")
    from fedstyle_secure.errors import ModelError
    from fedstyle_secure.models.npz import read_npz

    with pytest.raises(ModelError, match="not a regular file"):  # what index.npz and encoder weights are read by
        read_npz(_special_file(tmp_path, kind, "index.npz"), 1 << 20)


@pytest.mark.parametrize(
    ("toml", "command", "words"),
    [
        ("server = 5\n", "server", "server must be a table"),
        ('federation = "abc"\n[server]\nkeys = "k"\nstate_db = "s.db"\n', "server", "federation must be a table"),
        ('[server]\nkeys = "k"\nstate_db = "s.db"\n[federation]\nrefreshes = [[1]]\n', "server", "refreshes"),
        ("client = 5\n", "client", "client must be a table"),
        ('[server]\nkeys = "k"\nstate_db = "s.db"\nlisten = "127.0.0.1:99999"\n', "server", "server.listen"),
        ('[server]\nkeys = "k"\nstate_db = "s.db"\nlisten = "nonsense"\n', "server", "server.listen"),
        ('[client]\nkeys = "k"\ndata = "d"\nserver = "127.0.0.1:-1"\n', "client", "client.server"),
        ('[client]\nkeys = "k"\ndata = "d"\nmax_message_bytes = 9999999999\n', "client", "max_message_bytes"),
        ('[client]\nkeys = "k"\ndata = "d"\nreconnect_initial_seconds = 1e300\n', "client", "reconnect_initial"),
    ],
)
def test_a_config_value_of_the_wrong_kind_or_out_of_range_names_its_field(tmp_path, capsys, toml, command, words):
    """Each was a traceback (TypeError, ValueError, OverflowError inside gRPC or time) or, for a port
    above 65535, silently another port (gRPC wrapped 99999 to 34463)."""
    config = tmp_path / "c.toml"
    config.write_text(toml)
    _no_traceback_error(capsys, [command, "--config", str(config)], words)


def test_a_schedule_with_a_nan_deadline_or_a_huge_seed_is_refused():
    from fedstyle_secure.errors import ConfigError
    from fedstyle_secure.federation.coordinator import Schedule

    for schedule, words in [
        (Schedule(phase_seconds=math.nan), "phase_seconds"),
        (Schedule(secure_mode="secagg", masking_seconds=math.nan), "masking_seconds"),
        (Schedule(startup_seconds=math.inf), "startup_seconds"),
        (Schedule(max_retries=-5), "max_retries"),
        (Schedule(seed=2**64), "seed"),
    ]:
        with pytest.raises(ConfigError, match=words):
            schedule.validate(3)


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        ([*SIM_TINY, "--seed", str(2**70)], "--seed"),
        (["launch", "--data", "d", "--work", "w", "--epsilon", "nan"], "--epsilon"),
        (["launch", "--data", "d", "--work", "w", "--epsilon", "8", "--delta", "2"], "--delta"),
        (["launch", "--data", "d", "--work", "w", "--timeout", "nan"], "--timeout"),
        (["launch", "--data", "d", "--work", "w", "--rounds", "0"], "--rounds"),
        (["demo", "--rounds", "0"], "--rounds"),
        (["demo", "--timeout", "-1"], "--timeout"),
        ([*SWEEP_TINY[:-1], "100000000000"], "--seeds"),
    ],
)
def test_out_of_range_numbers_are_refused_before_any_work(tmp_path, monkeypatch, capsys, argv, words):
    """Each ran until its timeout (a NaN epsilon killed every launched artist with a traceback, a
    round count of 0 let the demo's artists retry a server that had exited), overflowed (a seed above
    2**63) or ran out of memory (a seed count of 10**11) before saying what was wrong."""
    monkeypatch.chdir(tmp_path)
    _no_traceback_error(capsys, [*argv, "--out", str(tmp_path / "o")] if argv[0] in ("demo",) else argv, words)
    assert not (tmp_path / "w").exists() and not (tmp_path / "o").exists()


def test_a_manifest_with_a_non_string_artist_is_a_clear_error(tmp_path, capsys):
    from fedstyle_secure.secure.keys.keystore import MANIFEST
    from fedstyle_secure.transport.loopback import write_fresh_keys

    keys = write_fresh_keys(tmp_path / "keys", ("artist_a", "artist_b"))
    manifest = json.loads((keys / MANIFEST).read_text())
    manifest["artists"] = [[1], "artist_a"]
    (keys / MANIFEST).write_text(json.dumps(manifest))
    _no_traceback_error(capsys, ["keys", "check", "--keys", str(keys), "--server"], "must be a list of strings")


def test_a_client_with_a_missing_data_folder_says_so_before_reaching_the_server(tmp_path, capsys):
    """It retried an unreachable server for ``give_up_seconds`` (900 s by default) and then said only
    that the server was unreachable; the data path is checked first now."""
    config = tmp_path / "c.toml"
    config.write_text(f'[client]\nkeys = "{tmp_path / "keys"}"\ndata = "/nonexistent"\nserver = "127.0.0.1:9"\n')
    _no_traceback_error(capsys, ["client", "--config", str(config)], "client.data: data folder /nonexistent does not")


@pytest.mark.parametrize(
    ("artists", "words"),
    [
        ((), "has no artist sub-folders"),
        (("ann", "ben", "cy"), "exactly one artist's folder, found ['ann', 'ben', 'cy']"),
    ],
)
def test_a_client_whose_data_folder_is_not_one_artists_says_so_before_reaching_the_server(
    tmp_path, capsys, artists, words
):
    """A flat folder of images, or one holding three artists, waited for the server and failed only
    after joining the run, leaving the others waiting on quorum (a helper's walkthrough, 2026-12-02)."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "0.png").write_bytes(b"")  # flat: an image where an artist folder belongs
    for name in artists:
        (data / name).mkdir()
    config = tmp_path / "c.toml"
    config.write_text(f'[client]\nkeys = "{tmp_path / "keys"}"\ndata = "{data}"\nserver = "127.0.0.1:9"\n')
    _no_traceback_error(capsys, ["client", "--config", str(config)], words)


@pytest.mark.parametrize("where", ["folder", "not-a-database"])
def test_a_server_state_db_that_is_not_a_database_names_the_field(tmp_path, where):
    from fedstyle_secure.errors import ConfigError
    from fedstyle_secure.transport.server.store import StateStore

    path = tmp_path / "state"
    if where == "folder":
        path.mkdir()
    else:
        path.write_text("root:x:0:0:root:/root:/bin/bash\n" * 200)
    with pytest.raises(ConfigError, match="server.state_db: .* is not a usable SQLite database"):
        StateStore(path)


def test_a_client_whose_floor_no_sum_of_its_roster_can_meet_says_so_before_reaching_the_server(tmp_path, capsys):
    """client.min_quorum = 4 with a roster of 2: the artist connected, extracted its features and sat
    out every round (a user walkthrough, sixteenth review).  It is refused at start now, exit 2."""
    from fedstyle_secure.transport.loopback import write_fresh_keys

    keys = write_fresh_keys(tmp_path / "keys", ("artist_a", "artist_b"))
    data = tmp_path / "data"
    (data / "artist_a").mkdir(parents=True)
    config = tmp_path / "c.toml"
    config.write_text(
        f'[client]\nkeys = "{keys}"\ndata = "{data}"\nserver = "127.0.0.1:9"\nartist = "artist_a"\nmin_quorum = 4\n'
    )
    _no_traceback_error(capsys, ["client", "--config", str(config)], "client.min_quorum: 4 is above the 2 artists")


def test_a_committee_size_outside_ckks_is_refused_not_ignored():
    from fedstyle_secure.errors import ConfigError
    from fedstyle_secure.federation.coordinator import Schedule

    with pytest.raises(ConfigError, match="committee_size applies to secure_mode 'ckks' only"):
        Schedule(secure_mode="secagg", committee_size=3).validate(5)
    Schedule(secure_mode="ckks", committee_size=3).validate(5)


def test_a_committee_size_the_roster_cannot_hold_names_the_server_config_file(tmp_path, capsys):
    """committee_size = 4 with a roster of 3 was refused without naming the file (sixteenth review's
    walkthrough): the range checks that need the roster now name it, like every other [federation] check."""
    from fedstyle_secure.transport.loopback import write_fresh_keys

    keys = write_fresh_keys(tmp_path / "keys", ("artist_a", "artist_b", "artist_c"))
    config = tmp_path / "server.toml"
    config.write_text(
        f'[server]\nkeys = "{keys}"\nstate_db = "{tmp_path / "state.db"}"\n'
        '[federation]\nsecure_mode = "ckks"\ncommittee_size = 4\n'
    )
    _no_traceback_error(
        capsys, ["server", "--config", str(config)], f"{config}: [federation] committee_size must be within 2..3"
    )


# ---------------------------------------------------------------- seventeenth review: a user's sweep


def test_a_sweep_with_delta_or_a_noise_multiplier_runs_its_dp_cells(tmp_path, feature_cache, capsys):
    """`sweep --delta 1e-5` (the example of docs/sweep.md) and `--noise-multiplier` failed every
    training cell: each cell rebuilt its configuration from the hidden single-run --epsilon (inf),
    which refuses those options.  They now apply to the finite epsilons' cells, and the reference row
    uses the same delta (a user walkthrough)."""
    argv = ["sweep", "--synthetic", "--artists", "3", "--per-artist", "6", "--rounds", "1", "--local-epochs", "1"]
    argv += ["--algorithms", "fedavg", "--seeds", "1", "--epsilons", "2,inf", "--public-pretrain-steps", "0"]
    assert main([*argv, "--delta", "1e-6", "--out", str(tmp_path / "a")]) == 0, capsys.readouterr().err
    assert main([*argv, "--noise-multiplier", "2", "--out", str(tmp_path / "b")]) == 0, capsys.readouterr().err
    only_inf = [*argv[: argv.index("2,inf")], "inf", *argv[argv.index("2,inf") + 1 :], "--delta", "1e-6"]
    _no_traceback_error(capsys, [*only_inf, "--out", str(tmp_path / "c")], "this sweep has none")
    for out in ("a", "b"):  # exit 0: no cell failed; fedavg and the reference at both epsilons
        assert len(json.loads((tmp_path / out / "sweep.json").read_text())["cells"]) == 4


def test_a_sweep_over_a_changed_data_folder_recomputes_its_cells(tmp_path, monkeypatch):
    """Cells were keyed on the data folder's path: after a painter was removed, a rerun reported the
    four-artist results for a three-artist federation ("2 of 2 cells (0 computed now)").  The key now
    holds a fingerprint of the folder's content (a user walkthrough)."""
    calls: list = []
    monkeypatch.setattr("fedstyle_secure.cli.sweep.make_cell_runner", _fake_runner(calls))
    data = tmp_path / "art"
    assert main(["synth", "--out", str(data), "--artists", "3", "--per-artist", "6", "--seed", "1"]) == 0
    argv = ["sweep", "--data", str(data), *SWEEP_TINY[SWEEP_TINY.index("--rounds") :], "--out", str(tmp_path / "sweep")]
    assert main(argv) == 0 and calls
    calls.clear()
    assert main(argv) == 0 and not calls  # unchanged: reused
    next((data / "artist_02").iterdir()).unlink()
    assert main(argv) == 0 and calls, "cells of the old folder reused"


@pytest.mark.parametrize(
    ("option", "value"),
    [("--rounds", "0"), ("--tau", "0"), ("--lr", "-1"), ("--batch-size", "0"), ("--local-epochs", "0")],
)
def test_a_sweep_with_a_bad_training_option_is_one_clear_error_before_any_cell(tmp_path, capsys, option, value):
    """Each of these failed every training cell on its own, printed one long line per cell and exited
    1 with only the reference row written (a user walkthrough)."""
    argv = [*SWEEP_TINY, "--out", str(tmp_path / "sweep")]
    argv = [*argv[: argv.index("--rounds")], *argv[argv.index("--rounds") + 2 :], option, value]
    if option != "--rounds":
        argv += ["--rounds", "1"]
    _no_traceback_error(capsys, argv, option)
    assert not (tmp_path / "sweep" / "sweep.json").exists()


@pytest.mark.parametrize("algorithm", ["local", "fedproto"])
def test_an_index_of_a_personal_model_algorithm_is_refused_before_training(tmp_path, monkeypatch, capsys, algorithm):
    """`simulate --algorithm local --index-out DIR` trained, wrote results.json and only then failed:
    such an algorithm has no shared encoder to index with (a user walkthrough)."""

    def fake_run_simulation(*args, **kwargs):  # FAKE: must not be reached
        raise AssertionError("training started before --index-out was checked")

    monkeypatch.setattr("fedstyle_secure.cli.simulate.run_simulation", fake_run_simulation)
    argv = [*SIM_TINY, "--algorithm", algorithm, "--out", str(tmp_path / "r.json"), "--index-out", str(tmp_path / "i")]
    _no_traceback_error(capsys, argv, "has no shared encoder")
    assert not (tmp_path / "r.json").exists()


def test_a_dp_simulation_prints_the_frozen_dp_reference_beside_the_non_private_one(tmp_path, feature_cache, capsys):
    """Under DP `simulate` compared the run with the non-private frozen features only (a user read
    "DP FedStyle is worse than not training"); the frozen + DP prototypes reference at the run's
    epsilon is now printed and written too (a user walkthrough)."""
    out = tmp_path / "r.json"
    argv = [*SIM_TINY, "--epsilon", "4", "--public-pretrain-steps", "0", "--out", str(out)]
    assert main(argv) == 0
    assert "frozen + DP prototypes, ε = 4" in capsys.readouterr().out
    payload = json.loads(out.read_text())
    assert 0.0 <= payload["frozen_dp_reference"]["artist_accuracy"] <= 1.0
    assert "frozen_feature_reference" in payload


def test_a_sweep_over_an_image_whose_name_is_not_utf8_runs(tmp_path, monkeypatch, capsys):
    """The sweep's data fingerprint encoded file names as UTF-8 and died with a UnicodeEncodeError
    traceback on a Latin-1 name that the image loader accepts (a red team, seventeenth review)."""
    import os
    import shutil

    calls: list = []
    monkeypatch.setattr("fedstyle_secure.cli.sweep.make_cell_runner", _fake_runner(calls))
    data = tmp_path / "art"
    assert main(["synth", "--out", str(data), "--artists", "3", "--per-artist", "6", "--seed", "1"]) == 0
    first = next((data / "artist_00").iterdir())
    shutil.copy(first, os.fsencode(data / "artist_00") + b"/\xe9t\xe9" + os.fsencode(first.suffix))  # "été", Latin-1
    argv = ["sweep", "--data", str(data), *SWEEP_TINY[SWEEP_TINY.index("--rounds") :], "--out", str(tmp_path / "s")]
    assert main(argv) == 0, capsys.readouterr().err
