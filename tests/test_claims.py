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


def test_the_sentence_says_where_a_claim_holds_and_where_not_naming_only_what_tells_them_apart(grids):
    """The cnn gains 2 points, the dense network nothing: the sentence names the architectures (all
    else is the same), each with its figure, and the verdict alone would have hidden the dense one."""
    found = claims.judge(list(grids))
    helps = found["transfer-helps"]
    gains = {e["arch"]: e["gain_points"] for e in helps.evidence}
    assert claims.sentence(helps) == (f"Holds for cnn ({gains['cnn']:+.2f} points); "
                                      f"no difference for dense ({gains['dense']:+.2f} points).")
    # Settings that all hold merge: three sizes read "every setting", with the range of the gaps.
    gaps = [e["gap_points"] for e in found["dense-poor-cnn-good"].evidence]
    assert claims.sentence(found["dense-poor-cnn-good"]) == \
        f"Holds for every setting ({min(gaps):+.2f} to {max(gaps):+.2f} points)."
    # A rule with a line besides no gain says so: "holds" there means below the book's gain.
    assert claims.sentence(found["other-pairs-and-seeds-do-worse"]).endswith(
        "each held against the book's gain, +2.20 points.")


def test_a_setting_measured_by_studies_that_disagree_is_named_in_each_group_with_its_count(tmp_path):
    """Both presets gain in one study; in the other only the notebook's is measured, and it does not:
    the book rates merge into one name, the notebook rates are counted in each group."""
    gains = write_study(tmp_path / "gains", {"transfer": 0.02}, presets=("book", "notebook"), sd=0.002, rng_seed=3)
    flat = write_study(tmp_path / "flat", {"transfer": 0.0}, presets=("notebook",), sd=0.002, rng_seed=4)
    helps = claims.judge([gains, flat])["transfer-helps"]
    text = claims.sentence(helps)
    assert text.startswith("Holds for book rates (+") and "notebook rates in 1 of 2 studies (+" in text
    assert "; no difference for notebook rates in 1 of 2 studies (" in text


def test_any_claim_reads_as_a_sentence_and_a_forest_plot_whatever_its_rule_calls_its_pieces():
    """A claim from another rule (the confirmatory study's, say): its pieces' own verdict words
    are not known here, so they read as "not shown", and every figure is drawn."""
    from fmtransfer.study import forest

    evidence = [{"study": "runs/a", "arch": "cnn", "contender": "lp-ft", "gain_points": 1.5, "ci95_points": [0.5, 2.5],
                 "verdict": "better"},
                {"study": "runs/a", "arch": "cnn", "contender": "l2-sp", "gain_points": -1.0,
                 "ci95_points": [-2.0, -0.1], "verdict": "worse"},
                {"study": "runs/a", "arch": "cnn", "contender": "gradual", "gain_points": 0.2, "ci95_points": None,
                 "verdict": "pre-registered: undecided"}]
    claim = claims.Claim("fine-tuning-beats-freezing", "Fine-tuning beats freezing.", "11.2.1", "supported",
                         evidence, None, "a made-up rule")
    assert claims.sentence(claim) == ("Holds for lp-ft (+1.50 points); reversed for l2-sp (-1.00 points); "
                                      "not shown for gradual (+0.20 points).")
    svg = forest.svg(claim)
    assert svg.startswith("<svg") and svg.count('<g class="point"') == 3
    for direction, colour in (("above", "#1565c0"), ("below", "#c62828"), ("across", "#6b6b6b")):
        assert f'data-direction="{direction}"' in svg and colour in svg
    for text in ("+1.50 [+0.50, +2.50]", "-1.00 [-2.00, -0.10]", ">+0.20<"):
        assert text in svg
    assert forest.svg(claims.Claim("x", "x", "0", "no evidence", [], None, "r")) == ""
