"""Seventeenth review: a dishonest Flower server against the signed withdrawals (a red-team helper).

One crafted message -- the genuine one with a DP announcement no planning size can plan, e.g. a
refresh outside the run -- was refused before the artist's privacy state opened, so the refusal's
withdrawal signed "no report at all" (the end of its reports was read from a ledger that was not
open) and was not kept: the artist went on taking part after signing it.  A server keeping that
withdrawal and deleting the artist's reports (all of them, or those after it) had ``fedstyle audit
--keys`` come back clean, the artist's epsilon gone from it.  A withdrawal now signs where the reports
in the artist's own folder end (of this run), is kept there, and an artist that signed one in a run
never acts in it again.  Both tests fail without the fix.
"""

from __future__ import annotations

import json
import shutil

import pytest

pytest.importorskip("flwr")

from fedstyle_secure.cli.main import main
from fedstyle_secure.flower.records import PHASE_ACTIONS, ArtistReply, ServerMessage
from fedstyle_secure.privacy.withdrawals import WITHDRAWAL_NAME
from tests.test_flower_app import ARTISTS, outside_runtime  # noqa: F401 (fixture)
from tests.test_flower_masking_attacks import Run, copied

TARGET = ARTISTS[0]


@pytest.mark.usefixtures("outside_runtime")
def test_a_withdrawal_refused_before_the_state_opens_signs_where_the_artists_reports_end(tmp_path, data, capsys):
    run = Run(tmp_path / "run", data, "none", 8.0)
    # the genuine run, to its end: every artist spends and reports every round
    for _ in range(30):
        if run.federation.coordinator.finished:
            break
        run.federation.run_phase()
    assert run.federation.coordinator.finished and run.federation.refusals == []
    server_reports = run.configs.server.parent / "reports"
    own_reports = run.configs.artists[TARGET].parent / "reports" / TARGET
    assert sorted(p.name for p in (server_reports / TARGET).glob("round-*.json"))
    final = json.loads(sorted((server_reports / TARGET).glob("round-*.json"))[-1].read_text())
    spent = final["epsilon"]["prv"]
    assert spent > 1.0

    # the dishonest server: the last genuine message to the target, its DP announcement made unusable
    inbox, _ = run.grid.sent(PHASE_ACTIONS["publish"], run.nodes[TARGET])
    crafted = copied(inbox)
    crafted.plan.dp.release_rounds.append(999)  # a refresh outside the run: check_announced_plan refuses it
    reply = run.deliver(TARGET, "publish", crafted)
    assert reply.withdrawal is not None, "the artist did not withdraw"
    signed = json.loads(reply.withdrawal.signed_json)
    own = sorted(own_reports.glob("round-*.json"))
    assert signed["last_report_round"] == json.loads(own[-1].read_text())["round"]  # not "none"

    # the server writes its folder: the target's reports deleted, the genuine withdrawal kept
    audited = shutil.copytree(server_reports, tmp_path / "audited")
    for report in (audited / TARGET).glob("round-*.json"):
        report.unlink()
    (audited / TARGET / WITHDRAWAL_NAME).write_bytes(reply.withdrawal.signed_json)
    capsys.readouterr()
    status = main(["audit", str(audited), "--keys", str(run.configs.server.parent.parent / "keys"), "--json"])
    result = json.loads(capsys.readouterr().out)
    # the audit must not be clean: the artist spent epsilon `spent` and every report of it is gone
    assert status != 0 and not result["clean"], (
        f"audit CLEAN with every report of {TARGET} (epsilon {spent:.3g} spent) deleted, "
        f"explained by a withdrawal it signed: {result['withdrawn']}"
    )


@pytest.mark.usefixtures("outside_runtime")
def test_an_artist_that_signed_a_withdrawal_never_acts_in_the_run_again(tmp_path, data, capsys):
    """The variant a fix of the signed end alone leaves open: the refusal before the state opens was
    not kept, so after signing "my reports end at round 0" the artist went on and spent the final
    publication; the server deleted the reports after round 0 and the audit was clean."""
    run = Run(tmp_path / "run", data, "none", 8.0)
    run.until("contribute", round_id=1)
    run.federation.run_phase()  # round 1's contribution: the count and DP-SGD of round 0, reported
    assert run.federation.refusals == []
    inbox, _ = run.grid.sent(PHASE_ACTIONS["contribute"], run.nodes[TARGET])
    crafted = copied(inbox)
    crafted.plan.dp.release_rounds.append(999)
    reply = run.deliver(TARGET, "contribute", crafted)
    assert reply.withdrawal is not None
    signed = json.loads(reply.withdrawal.signed_json)
    # the run goes on: does the artist that signed it stopped still publish and spend?
    for _ in range(30):
        if run.federation.coordinator.finished:
            break
        run.federation.run_phase()
    server_reports = run.configs.server.parent / "reports"
    reported = sorted(p.name for p in (server_reports / TARGET).glob("round-*.json"))
    audited = shutil.copytree(server_reports, tmp_path / "audited")
    last = signed["last_report_round"]
    for report in (audited / TARGET).glob("round-*.json"):
        if last is None or int(report.stem.split("-")[1]) > last:
            report.unlink()
    (audited / TARGET / WITHDRAWAL_NAME).write_bytes(reply.withdrawal.signed_json)
    capsys.readouterr()
    status = main(["audit", str(audited), "--keys", str(run.configs.server.parent.parent / "keys"), "--json"])
    result = json.loads(capsys.readouterr().out)
    later = [name for name in reported if last is None or int(name[6:10]) > last]
    assert not later or (status != 0 and not result["clean"]), (
        f"{TARGET} signed a withdrawal ending its reports at round {last}, went on to report {reported}; with "
        f"the later reports deleted the audit is CLEAN: {result['withdrawn']}"
    )


@pytest.mark.usefixtures("outside_runtime")
def test_an_artist_that_withdrew_before_its_state_opened_draws_no_planning_size_later(
    tmp_path, data, capsys, monkeypatch
):
    """A later red team (same review): the crafted message came FIRST, before the artist held any state;
    the next, genuine, message opened a fresh privacy state -- drew a planning size, charged and
    reported its count -- before ``admit`` saw the kept withdrawal.  With those reports deleted the audit
    (``--keys``, ``--run-id``) was clean.  The kept withdrawal is now checked before a size is drawn."""
    run = Run(tmp_path / "run", data, "none", 8.0)
    grid, node = run.grid, run.nodes[TARGET]
    first: list[ArtistReply] = []
    genuine_deliver = grid._deliver
    crafting: list[bool] = []

    def deliver(message):  # the dishonest server: before its first genuine message, a crafted one
        if message.metadata.dst_node_id == node and not crafting:
            crafting.append(True)
            crafted = copied(ServerMessage.from_record(message.content))
            crafted.plan.dp.release_rounds.append(999)  # unusable: refused before the privacy state opens
            first.append(grid.replay(node, message.metadata.message_type, crafted))
        return genuine_deliver(message)

    monkeypatch.setattr(grid, "_deliver", deliver)
    for _ in range(30):
        if run.federation.coordinator.finished:
            break
        run.federation.run_phase()
    assert first and first[0].withdrawal is not None, "the crafted message did not make the artist withdraw"
    signed = json.loads(first[0].withdrawal.signed_json)
    assert signed["last_report_round"] is None  # "I reported nothing" (true when signed)

    own = run.configs.artists[TARGET].parent / "reports" / TARGET
    own_reports = sorted(own.glob("round-*.json"))
    server_reports = run.configs.server.parent / "reports"
    # did the artist act after it signed that it stopped?  it charged and reported its count:
    acted_after = [json.loads(p.read_text()) for p in own_reports]
    spent = max((r["epsilon"]["prv"] for r in acted_after), default=0.0)

    # the server's folder: the target's reports deleted, the FIRST withdrawal kept
    audited = shutil.copytree(server_reports, tmp_path / "audited")
    for report in (audited / TARGET).glob("round-*.json"):
        report.unlink()
    (audited / TARGET).mkdir(exist_ok=True)
    (audited / TARGET / WITHDRAWAL_NAME).write_bytes(first[0].withdrawal.signed_json)
    capsys.readouterr()
    keys = str(run.configs.server.parent.parent / "keys")
    status = main(["audit", str(audited), "--keys", keys, "--run-id", signed["run_id"], "--json"])
    result = json.loads(capsys.readouterr().out)
    assert not acted_after or (status != 0 and not result["clean"]), (
        f"{TARGET} signed 'no report' then charged and reported epsilon {spent:.3g} "
        f"({[p.name for p in own_reports]}); with those deleted the audit is CLEAN: {result['withdrawn']}"
    )
