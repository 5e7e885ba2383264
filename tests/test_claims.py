"""`fmtransfer study claims`: each of the chapter's claims judged by its fixed rule, on study
directories written from numbers whose truth is known."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from fmtransfer.cli import cli
from fmtransfer.study import claims
from studyfiles import write_study

SIZES = (50, 200, 1000)


@pytest.fixture(scope="module")
def grids(tmp_path_factory):
    """A dense study where transfer does nothing and greedy pretraining helps at 50 images, and a
    cnn study where transfer gains 3 points at 50 images and 0.5 at 1000."""
    root = tmp_path_factory.mktemp("claims")
    dense = write_study(root / "dense", {"transfer": 0.0, "greedy": {50: 0.03, 200: 0.0, 1000: 0.0}},
                        sizes=SIZES, sd=0.004, rng_seed=1)
    cnn = write_study(root / "cnn", {"transfer": {50: 0.03, 200: 0.02, 1000: 0.005}}, arch="cnn", sizes=SIZES,
                      sd=0.004, rng_seed=2)
    return dense, cnn


def test_each_claim_gets_the_verdict_its_rule_gives_on_known_truths(grids):
    found = claims.judge(list(grids))
    assert [c.id for c in found.claims] == list(claims.CLAIM_IDS) and not found.not_judged
    verdicts = {c.id: c.verdict for c in found.claims}
    assert verdicts["transfer-helps"] == "supported"  # the cnn gains, the dense network neither gains nor loses
    assert verdicts["dense-poor-cnn-good"] == "supported"
    assert verdicts["gain-shrinks-with-data"] == "supported"
    assert verdicts["pretraining-helps-when-scarce"] == "supported"
    assert verdicts["book-result-picked"] == "supported"  # dense judges it: 0 of 10 seeds gain 2.2 points
    picked = found["book-result-picked"]
    assert [(e["arch"], e["judged"]) for e in picked.evidence] == [("dense", True), ("cnn", False)]
    assert picked.evidence[0]["reach_gain"] == 0 and picked.evidence[0]["ci95_gain"][1] < 0.5
    assert verdicts["other-pairs-and-seeds-do-worse"] == "supported"


def test_a_null_grid_gives_no_evidence_with_its_detectable_effect_or_equivalence(tmp_path):
    noisy = claims.judge([write_study(tmp_path / "noisy", {"transfer": 0.0}, sd=0.02)])["transfer-helps"]
    assert noisy.verdict == "no evidence" and noisy.mde == pytest.approx(noisy.evidence[0]["mde_points"])
    assert noisy.mde > 0.5  # ten seeds with 2-point noise cannot see half a point
    quiet = claims.judge([write_study(tmp_path / "quiet", {"transfer": 0.0}, sd=0.001)])["transfer-helps"]
    assert quiet.verdict == "equivalent" and quiet.mde is None


def test_a_claim_the_grid_cannot_speak_to_is_left_out_and_says_what_it_needs(tmp_path):
    found = claims.judge([write_study(tmp_path, {"transfer": 0.0})])
    assert {"dense-poor-cnn-good", "gain-shrinks-with-data", "pretraining-helps-when-scarce"} == set(found.not_judged)
    assert "cnn study" in found.not_judged["dense-poor-cnn-good"]
    assert "dense-poor-cnn-good" not in [c.id for c in found.claims]


def test_claims_json_is_a_list_of_the_documented_fields(grids):
    result = CliRunner().invoke(cli, ["study", "claims", *map(str, grids), "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert isinstance(out, list) and len(out) == len(claims.CLAIM_IDS)
    for c in out:
        assert {"id", "claim", "verdict", "evidence", "mde"} <= set(c)
        assert c["verdict"] in claims.VERDICTS and c["evidence"]
        assert (c["mde"] is not None) == (c["verdict"] == "no evidence" and c["id"] != "book-result-picked")


def test_claims_table_and_markdown(grids):
    table = CliRunner().invoke(cli, ["study", "claims", *map(str, grids)])
    assert table.exit_code == 0 and "dense-poor-cnn-good" in table.stdout and "supported" in table.stdout
    # Piped (as here), the console is as wide as its longest line: the title and the notes start
    # at the left margin instead of being centred thousands of columns away.
    assert table.stdout.startswith("The chapter's claims on ")
    assert all(line.startswith(("Not judged", "Verdicts")) for line in table.stdout.splitlines()
               if line.lstrip().startswith(("Not judged", "Verdicts")))
    md = CliRunner().invoke(cli, ["study", "claims", *map(str, grids), "--markdown"])
    assert md.exit_code == 0 and md.stdout.startswith("| claim | verdict | where it holds, where it does not |")
    assert "**supported**" in md.stdout


def test_claims_of_a_directory_without_a_study_is_one_line_exit_2(tmp_path):
    result = CliRunner().invoke(cli, ["study", "claims", str(tmp_path)])
    assert result.exit_code == 2 and "not a study directory" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    both = CliRunner().invoke(cli, ["study", "claims", str(tmp_path), "--json", "--markdown"])
    assert both.exit_code == 2 and "give one of them" in both.stderr
