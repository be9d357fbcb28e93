"""server.toml / client.toml validation names the file and the bad field."""

from __future__ import annotations

import re
from pathlib import Path
from typing import cast

import pytest

from fedstyle_secure.errors import ConfigError
from fedstyle_secure.federation.rounds import default_refresh_rounds
from fedstyle_secure.transport.config import load_client_config, load_server_config

GOOD_SERVER = """
[server]
keys = "keys"
state_db = "state.sqlite"
listen = "127.0.0.1:0"
max_payload_bytes = 1048576

[federation]
rounds = 2
secure_mode = "ckks"
quorum = 2
phase_seconds = 30
refreshes = [0, 1]
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_good_server_config_resolves_paths_next_to_the_file(tmp_path):
    config = load_server_config(_write(tmp_path, GOOD_SERVER))
    assert config.keys == tmp_path / "keys" and config.state_db == tmp_path / "state.sqlite"
    assert config.schedule.secure_mode == "ckks" and config.schedule.refreshes == frozenset({0, 1})
    assert config.schedule.phase_seconds == 30.0 and config.max_payload_bytes == 1 << 20


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("quorum = 2", 'quorum = "two"'), "federation.quorum: must be a valid integer, got 'two'"),
        (
            ("max_payload_bytes = 1048576", "max_payload_bytes = 0"),
            "server.max_payload_bytes: must be greater than 0, got 0",
        ),
        (("rounds = 2", "rounds = 2\nround = 3"), "federation.round: unknown field (known: "),
        (('keys = "keys"\n', ""), "server.keys: missing required field"),
        (("refreshes = [0, 1]", 'refreshes = "all"'), "federation.refreshes"),
        (("[federation]", "[federatoin]"), "unknown table(s) federatoin"),
        (
            ("max_payload_bytes = 1048576", "max_payload_bytes = true"),
            "server.max_payload_bytes: must be a valid integer",
        ),
        (("phase_seconds = 30", 'phase_seconds = "30"'), "federation.phase_seconds: must be a valid number"),
        (('keys = "keys"', "keys = 3"), "server.keys:"),
    ],
)
def test_bad_server_config_names_the_field(tmp_path, edit, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_server_config(_write(tmp_path, GOOD_SERVER.replace(*edit)))


def test_an_unknown_federation_field_lists_the_dp_fields_among_the_known_ones(tmp_path):
    """A typo (`secure-mode`) listed the known fields without epsilon, delta, clip_norm, ... though
    the README's example sets epsilon in [federation] (a helper's walkthrough, 2026-12-02)."""
    with pytest.raises(ConfigError, match="secure-mode: unknown field") as info:
        load_server_config(_write(tmp_path, GOOD_SERVER.replace("rounds = 2", "rounds = 2\nsecure-mode = 'none'")))
    known = str(info.value).split("known: ", 1)[1]
    for name in ("epsilon", "delta", "clip_norm", "accountant", "noise_multiplier", "rounds", "secure_mode"):
        assert name in known.replace(")", "").split(", "), (name, known)


def test_client_config_and_invalid_toml(tmp_path):
    config = load_client_config(_write(tmp_path, '[client]\nkeys = "k"\ndata = "d"\nepochs = 2\n'))
    assert (config.keys, config.data, config.epochs) == (tmp_path / "k", tmp_path / "d", 2)
    with pytest.raises(ConfigError, match="client.epochs: must be greater than 0, got 0"):
        load_client_config(_write(tmp_path, '[client]\nkeys = "k"\ndata = "d"\nepochs = 0\n'))
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_client_config(_write(tmp_path, "[client\n"))
    assert config.min_quorum == 2  # a CKKS decryptor's own floor, whatever quorum a server announces
    assert load_client_config(_write(tmp_path, '[client]\nkeys = "k"\ndata = "d"\nmin_quorum = 5\n')).min_quorum == 5
    with pytest.raises(ConfigError, match="client.min_quorum: must be greater than 0"):
        load_client_config(_write(tmp_path, '[client]\nkeys = "k"\ndata = "d"\nmin_quorum = 0\n'))
    assert config.compact_memory is False  # opt-in: it costs CPU (fedstyle_secure.memory)
    compact = load_client_config(_write(tmp_path, '[client]\nkeys = "k"\ndata = "d"\ncompact_memory = true\n'))
    assert compact.compact_memory is True
    with pytest.raises(ConfigError, match="client.compact_memory"):
        load_client_config(_write(tmp_path, '[client]\nkeys = "k"\ndata = "d"\ncompact_memory = "yes"\n'))


def test_a_server_toml_without_refreshes_refreshes_as_the_simulator_does(tmp_path):
    """The simulator refreshes FedStyle's prototypes every training round without DP; a server.toml
    naming no ``refreshes`` refreshed none (``Schedule``'s empty default), so a networked FedStyle
    aligned to its round-0 start all run long (a next engineer's review, 2026-12-02).  Both now take
    ``default_refresh_rounds``."""
    from fedstyle_secure.federation.simulator import SimulationConfig, round_rules

    config = load_server_config(_write(tmp_path, GOOD_SERVER.replace("refreshes = [0, 1]\n", "")))
    simulated = round_rules(SimulationConfig(algorithm="fedstyle", rounds=config.schedule.rounds)).refreshes
    assert config.schedule.refreshes == simulated == frozenset(range(config.schedule.rounds))
    given = load_server_config(_write(tmp_path, GOOD_SERVER.replace("refreshes = [0, 1]", "refreshes = [1]")))
    assert given.schedule.refreshes == frozenset({1})  # a given list is kept


DP_FEDERATION = GOOD_SERVER.replace(
    'secure_mode = "ckks"', 'secure_mode = "ckks"\nepsilon = 8.0\ndelta = 1e-6\nclip_norm = 0.5\naccountant = "rdp"'
)


def test_dp_plan_comes_from_the_federation_table(tmp_path):
    config = load_server_config(_write(tmp_path, DP_FEDERATION.replace("refreshes = [0, 1]\n", "")))
    assert config.dp is not None
    assert (config.dp.epsilon, config.dp.delta, config.dp.clip_norm, config.dp.accountant) == (8.0, 1e-6, 0.5, "rdp")
    assert config.dp.noise_multiplier is None  # calibrated by each artist
    assert config.schedule.standardise is False  # no non-private set-up round under DP
    # the simulator's default_refresh_rounds(2, dp): no release during training by default
    assert config.schedule.refreshes == default_refresh_rounds(2, config.dp) == frozenset()
    assert load_server_config(_write(tmp_path, GOOD_SERVER)).dp is None
    assert (
        load_server_config(_write(tmp_path, GOOD_SERVER.replace("rounds = 2", "rounds = 2\nepsilon = inf"))).dp is None
    )


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("delta = 1e-6", "delta = 1.5"), "federation.delta: must be less than 1, got 1.5"),
        (("epsilon = 8.0", "epsilon = -1.0"), "federation.epsilon: must be greater than 0, got -1.0"),
        (("epsilon = 8.0", "epsilon = nan"), "federation.epsilon: must be greater than 0, got nan"),
        (
            ('accountant = "rdp"', 'accountant = "moments"'),
            "federation.accountant: must be one of prv, rdp, got 'moments'",
        ),
        (  # an approximation never enforces a budget (it let artists spend past theirs)
            ('accountant = "rdp"', 'accountant = "gdp"'),
            "federation.accountant: must be one of prv, rdp, got 'gdp'",
        ),
        (("clip_norm = 0.5", "clip_norm = 0"), "federation.clip_norm: must be greater than 0, got 0"),
        (("epsilon = 8.0", "epsilon = inf"), "federation.accountant: only meaningful with a finite federation.epsilon"),
        (("rounds = 2", "rounds = 2\nstandardise = true"), "federation.standardise"),
        (
            ('accountant = "rdp"', 'accountant = "rdp"\nprivate_layers = "first"'),
            "federation.private_layers: must be one of last, all",
        ),
    ],
)
def test_bad_dp_plan_names_the_field(tmp_path, edit, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_server_config(_write(tmp_path, DP_FEDERATION.replace(*edit)))


def test_client_budget_fields(tmp_path):
    text = (
        '[client]\nkeys = "k"\ndata = "d"\nbudget_epsilon = 4\nbudget_delta = 1e-6\n'
        'state_dir = "state"\nreports_dir = "reports"\n'
    )
    config = load_client_config(_write(tmp_path, text))
    assert (config.budget_epsilon, config.budget_delta) == (4.0, 1e-6)
    assert (config.state_dir, config.reports_dir) == (tmp_path / "state", tmp_path / "reports")
    with pytest.raises(ConfigError, match="client.budget_delta: must be less than 1"):
        load_client_config(_write(tmp_path, text.replace("1e-6", "1.0")))
    with pytest.raises(ConfigError, match="client.budget_epsilon: must be a finite number"):
        load_client_config(_write(tmp_path, text.replace("budget_epsilon = 4", "budget_epsilon = inf")))
    with pytest.raises(ConfigError, match="client: budget_delta needs budget_epsilon"):
        load_client_config(_write(tmp_path, text.replace("budget_epsilon = 4\n", "")))
    with pytest.raises(ConfigError, match="client.min_masking_threshold: must be greater than 0.5"):
        load_client_config(_write(tmp_path, text + "min_masking_threshold = 0.5\n"))


def test_a_config_built_in_code_is_validated_too(tmp_path):
    from fedstyle_secure.transport.config import ClientConfig

    with pytest.raises(ConfigError, match="ClientConfig.epochs: must be greater than 0, got 0"):
        ClientConfig(keys=tmp_path, data=tmp_path, epochs=0)
    with pytest.raises(ConfigError, match="ClientConfig.keys: must be a path"):
        ClientConfig(keys=cast(Path, 3), data=tmp_path)  # a crafted value, as a TOML file could hold
    with pytest.raises(ValueError, match="budget_delta needs budget_epsilon"):
        ClientConfig(keys=tmp_path, data=tmp_path, budget_delta=1e-6)
    assert ClientConfig(keys=cast(Path, str(tmp_path)), data=tmp_path).keys == tmp_path  # a path given as a string


def test_private_layers_travel_from_server_toml_to_every_artist(tmp_path):
    """The federation decides what DP-SGD updates; artists read it from the announced plan."""
    from fedstyle_secure.transport.dp_config import announced_dp, dp_parameters
    from fedstyle_secure.transport.wire import pb

    config = load_server_config(
        _write(tmp_path, DP_FEDERATION.replace('accountant = "rdp"', 'accountant = "rdp"\nprivate_layers = "all"'))
    )
    assert config.dp is not None and config.dp.private_layers == "all"
    plan = pb.RoundPlan(dp=dp_parameters(config.dp, [0]))
    announced = announced_dp(plan)
    assert announced is not None
    dp, releases = announced
    assert (dp.private_layers, dp.accountant, releases) == ("all", "rdp", frozenset({0}))
    default = load_server_config(_write(tmp_path, DP_FEDERATION)).dp
    legacy = pb.RoundPlan(dp=dp_parameters(default, []))
    legacy.dp.ClearField("private_layers")  # a plan from a server that does not announce it
    announced_legacy = announced_dp(legacy)
    assert default is not None and announced_legacy is not None
    assert default.private_layers == "last" and announced_legacy[0].private_layers == "last"


def test_an_artist_takes_part_only_in_its_secure_mode_and_never_in_a_switched_one(tmp_path):
    """``client.secure_mode`` names the only mode the artist takes part in; without it the run's first
    plan's mode is pinned, and a later plan of another mode (a server switching a masked federation
    to ``none`` to read an artist's own contribution), or of a phase its mode does not have, is
    refused (unit test of the rule; the attacks through the Flower ClientApp are in
    tests/test_flower_attacks.py)."""
    from fedstyle_secure.transport.artist.plan_checks import check_secure_mode
    from fedstyle_secure.transport.wire import pb

    base = '[client]\nkeys = "k"\ndata = "d"\n'
    free = load_client_config(_write(tmp_path, base))
    strict = load_client_config(_write(tmp_path, base + 'secure_mode = "secagg+"\n'))
    with pytest.raises(ConfigError, match="client.secure_mode: must be one of none, ckks, secagg, secagg\\+"):
        load_client_config(_write(tmp_path, base + 'secure_mode = "masked"\n'))
    masked = pb.RoundPlan(round_id=3, phase="advertise", secure_mode="secagg+")
    plain = pb.RoundPlan(round_id=3, phase="contribute", secure_mode="none")

    assert check_secure_mode(free, plain, None) == "none"  # the first plan sets the run's mode
    assert check_secure_mode(free, masked, "secagg+") == "secagg+"
    with pytest.raises(ConfigError, match="round 3: the plan announces secure_mode 'none', but this run began"):
        check_secure_mode(free, plain, "secagg+")
    assert check_secure_mode(strict, masked, None) == "secagg+"
    with pytest.raises(ConfigError, match="takes part only with 'secagg\\+' \\(client.secure_mode\\)"):
        check_secure_mode(strict, plain, None)
    # a phase the mode does not have: contribute (in the clear) under a masking mode, decrypt without CKKS
    for phase, mode in (("contribute", "secagg+"), ("decrypt", "none"), ("advertise", "ckks")):
        with pytest.raises(ConfigError, match=re.escape(f"phase '{phase}' under secure_mode '{mode}', which has no")):
            check_secure_mode(free, pb.RoundPlan(round_id=3, phase=phase, secure_mode=mode), mode)


def test_one_default_of_local_epochs_for_simulate_launch_and_a_networked_artist(tmp_path):
    """``fedstyle simulate`` trained 2 local epochs a round, a networked artist without ``epochs`` in its
    client.toml and every artist of ``fedstyle launch`` 1 (a next engineer's review, 2026-12-02): the
    same federation learnt differently by transport.  One default now serves all three."""
    from fedstyle_secure.cli.main import build_parser
    from fedstyle_secure.training.local import LocalConfig

    simulate = build_parser().parse_args(["simulate", "--synthetic"])
    launch = build_parser().parse_args(["launch", "--data", str(tmp_path), "--work", str(tmp_path / "w")])
    client = tmp_path / "client.toml"
    client.write_text('[client]\nkeys = "keys"\ndata = "portfolio"\n')
    assert simulate.local_epochs == launch.local_epochs == load_client_config(client).epochs == LocalConfig().epochs
