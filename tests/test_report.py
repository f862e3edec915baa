import math
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cnnsweep.cli import main
from cnnsweep.errors import CnnsweepError, ConfigError
from cnnsweep.frame import study_data
from cnnsweep.report import build_report, stats
from cnnsweep.report.build import _render, analyse, findings_summary, precision_note
from cnnsweep.report.findings import judge_claims, load_claims
from cnnsweep.report.tidy import tidy_frame
from cnnsweep.store import Store
from tests.conftest import REPO
from tests.report_fixture import DIVERGED_INDEX, FAILED_INDEX, WAITING, make_fixture_study


@pytest.fixture(scope="module")
def fixture_report(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fixture")
    store = make_fixture_study(folder)
    out = folder / "report"
    files = build_report(study_data(store), out)
    return store, files, out


def claim_evidence(html: str) -> dict[str, list[dict]]:
    """Claim id -> its evidence lines, parsed: context, difference, P(A > B), pairs."""
    table = html.split('id="findings"')[1].split("</table>")[0]
    found = {}
    for row in table.split("<tr><td>")[1:]:
        claim = row.split("</td>")[0]
        lines = []
        for item in row.split("<li>")[1:]:
            text = item.split("</li>")[0].replace("&gt;", ">").replace("&#39;", "'")
            if text.endswith(": no matched pairs"):
                head = text.removesuffix(": no matched pairs")
                lines.append({"context": head.split(": ")[0] if ": " in head else "", "pairs": 0})
                continue
            number = re.search(r"= ([+-][0-9.]+) ", text)
            prob = re.search(r"\) = ([0-9.]+) \[", text)
            pairs = re.search(r"(\d+) pairs", text)
            lines.append({"context": text.split(": ")[0] if ": " in text else "",
                          "difference": float(number.group(1)), "p": float(prob.group(1)),
                          "pairs": int(pairs.group(1))})  # fmt: skip
        found[claim] = lines
    return found


def verdicts(html: str) -> dict[str, str]:
    """Claim id -> verdict, read from the findings table."""
    table = html.split('id="findings"')[1].split("</table>")[0]
    rows = table.split("<tr><td>")[1:]
    return {row.split("</td>")[0]: row.split('class="verdict ')[1].split('"')[0] for row in rows}


def test_figures_are_real_pngs_of_sensible_size(fixture_report):
    _, files, _ = fixture_report
    names = [p.name for p in files.figures]
    # Chosen by the grid: the metric by each varied factor, the planted one (regularization)
    # first; the interaction of the two that matter most; time by batch size and epochs by
    # split (planted); training vs test; learning curves.
    assert names[0] == "test_accuracy_by_regularization.png"
    assert set(names[:5]) == {
        f"test_accuracy_by_{f}.png"
        for f in ("regularization", "lr", "batch_size", "split", "optimizer")
    }
    assert names[5].startswith("interaction_regularization_")
    assert names[6:] == ["train_time_by_batch_size.png", "epochs_trained_by_split.png",
                         "train_vs_test.png", "learning_curves.png"]  # fmt: skip
    for path in files.figures:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        with Image.open(path) as image:
            width, height = image.size
            assert 500 <= width <= 2000 and 350 <= height <= 2000
            pixels = np.asarray(image.convert("RGB").resize((64, 64))).reshape(-1, 3)
            colours = len(np.unique(pixels, axis=0))
            assert colours > 20  # something is drawn, not a blank canvas
        assert path.stat().st_size > 10_000


def test_the_page_embeds_the_figures_and_shows_every_run(fixture_report):
    store, files, out = fixture_report
    html = files.html.read_text()
    assert html.count("data:image/png;base64,") == len(files.figures) == 10
    assert 'src="http' not in html and "<script" not in html  # self-contained
    records = store.records()
    assert len(records) == 96
    for record in records:
        assert f'data-run-id="{record.run_id}"' in html
    assert "RuntimeError: out of memory (planted)" in html
    # The failed run's traceback, folded under it.
    assert "<details><summary>traceback</summary><pre>Traceback (most recent call last):" in html
    assert "in _train_epoch" in html
    assert html.count('class="state-failed"') == 1 and html.count('class="state-diverged"') == 1
    assert html.count('class="state-waiting"') == len(WAITING)
    assert "93 / 96" in html and "97% done; 2 waiting, 1 failed, 1 diverged" in html
    assert "Figure 10. Learning curves." in html
    assert "93 finished runs (3 unfinished or failed runs not drawn)" in html
    csv = pd.read_csv(out / "results.csv")
    assert len(csv) == 96 and list(csv.columns[:3]) == ["lr", "batch_size", "optimizer"]
    assert csv.loc[FAILED_INDEX, "state"] == "failed"
    assert csv.loc[DIVERGED_INDEX, "state"] == "diverged"
    assert not list(out.glob(".report-*"))  # no staging folder left


def test_findings_follow_from_the_planted_effects(fixture_report):
    _, files, _ = fixture_report
    html = files.html.read_text()
    found = verdicts(html)
    assert found["a"] == "supported"  # batch norm planted 8 points better for every optimizer
    assert found["d"] == "supported"  # batch 64 planted faster
    assert found["f"] == "supported"  # 90/10 planted to stop later
    assert found["g"] == "supported"  # dropout planted with a 25-point train-test gap
    assert found["e"] == "inconclusive"  # no rmsprop in this study: not varied
    assert found["b"] == "inconclusive"  # adam beats sgd (planted +2), but rmsprop is absent
    assert found["c"] == "inconclusive"  # no learning-rate effect was planted
    evidence = claim_evidence(html)
    # (a) within each optimizer: the planted +8 points (noise sd 1; the one diverged run, at
    # 10%, adds about 2 to its optimizer's mean), P near 1; the failed and the two waiting runs
    # break 3 of the 48 pairs.
    rows_a = evidence["a"]
    assert [r["context"] for r in rows_a] == ["optimizer=adam", "optimizer=sgd"]
    for row in rows_a:
        assert 7.0 < row["difference"] < 11.0 and row["p"] >= 0.9 and row["pairs"] >= 21
    assert sum(r["pairs"] for r in rows_a) == 45
    (adam_sgd, adam_rmsprop) = evidence["b"]
    assert 0.0 < adam_sgd["difference"] < 3.5 and adam_sgd["pairs"] == 45
    assert adam_rmsprop["pairs"] == 0  # "no matched pairs"
    assert [r["context"] for r in evidence["c"]] == [
        "optimizer=adam",
        "optimizer=rmsprop",
        "optimizer=sgd",
    ]
    assert evidence["c"][1]["pairs"] == 0  # no rmsprop here


def test_the_end_summary_names_the_planted_best_configuration(fixture_report):
    """The lines `cnnsweep run` ends with: batch norm (+8 points) with Adam (+2) is planted as
    best, batch norm as what matters most."""
    _, files, _ = fixture_report
    best, mattered, claims = files.summary
    assert best.startswith("best: ") and "test_accuracy" in best and "95% CI" in best
    assert "optimizer=adam" in best and "regularization=batch_norm" in best
    assert "diverged" not in best  # the fixture's diverged run is not of the best configuration
    assert mattered.startswith("mattered most: regularization (") and "best batch_norm" in mattered
    assert claims.startswith("claims: ") and claims.endswith("(of 7)")


def test_runs_in_mixed_precisions_are_noted_on_the_page_and_at_the_end(fixture_report):
    """Machines with and without native bf16 on one study train its runs in two precisions:
    the page and the end summary say so, with the counts; a study that varies ``amp`` itself,
    or one precision throughout (the fixture: its summary is three lines), says nothing."""
    store, files, _ = fixture_report
    assert 'id="precision-note"' not in files.html.read_text()
    data = study_data(store)
    finished = data.results.index[data.results["state"] == "complete"]
    data.results.loc[finished[::2], "precision"] = "bf16-autocast"
    frame, analysis = analyse(data, None)
    note = precision_note(frame, analysis.factors)
    done = frame[frame["finished"]]  # the diverged run too, in fp32
    assert note.startswith(f"the finished runs trained in 2 precisions (fp32 {len(done) - 46}, "
                           "bf16-autocast 46)") and len(finished[::2]) == 46  # fmt: skip
    assert findings_summary(frame, analysis)[-1].startswith("note: the finished runs trained in 2")
    assert 'id="precision-note"' in _render(data, frame, analysis, [])
    assert precision_note(frame, [*analysis.factors, "amp"]) is None


def test_a_study_where_dropout_wins_contradicts_claim_a(fixture_report):
    """The verdicts the page shows (report/build.py judges the claims on the study's tidy frame
    so), without drawing a second page, nor storing a second study: the fixture's results with
    batch norm's planted +8 points turned into -8."""
    store, _, _ = fixture_report
    data = study_data(store)
    factors = list(data.document["spec"]["grid"])
    results = data.results.copy()
    planted = results["batch_norm"].astype(bool) & (results["stop_reason"] != "diverged")
    results.loc[planted, "test_accuracy"] -= 16.0
    findings = judge_claims(load_claims("seed-report"), tidy_frame(results, factors), factors)
    verdicts = {f.claim.id: f.verdict for f in findings}
    assert verdicts["a"] == "contradicted"
    (claim_a,) = [f for f in findings if f.claim.id == "a"]
    for evidence in claim_a.evidence:  # each optimizer: dropout ahead (8 points, less where
        assert evidence.comparison.mean_difference < -4.0, evidence  # the diverged run pairs)
        assert evidence.comparison.outcome == "less", evidence


def test_page_loads_in_headless_chromium_without_console_errors(fixture_report, tmp_path):
    if shutil.which("chromium") is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (.ci/run installs it)")
        pytest.skip("chromium is not installed")
    _, files, _ = fixture_report
    shot = tmp_path / "shot.png"
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "screenshot_report.py"), str(files.html),
         str(shot)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr  # exits 1 on any console message or page error
    with Image.open(shot) as image:
        assert image.size[0] == 1280 and image.size[1] > 3000  # the whole long page


# --- statistics -----------------------------------------------------------------------------


def wilson(wins: float, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """The Wilson score interval, written out here from its formula (independent of the code)."""
    centre = (wins + z * z / 2) / (n + z * z)
    half = z * math.sqrt(wins * (n - wins) / n + z * z / 4) / (n + z * z)
    return centre - half, centre + half


def test_small_sample_statistics_against_values_worked_out_by_hand():
    # Sign test: two-sided exact binomial, ties dropped.
    # 5 of 5: 2/32; 6 of 7: 2*8/128; 6 of 6: 2/64.
    assert stats.sign_test([1] * 5) == pytest.approx(0.0625)
    assert stats.sign_test([1] * 6 + [-1]) == pytest.approx(0.125)
    assert stats.sign_test([1] * 6) == pytest.approx(0.03125)
    assert stats.sign_test([2, 1, 0, 3]) == pytest.approx(0.25)  # the tie is dropped: 3 of 3
    assert math.isnan(stats.sign_test([0, 0]))
    assert stats.MIN_PAIRS == 6  # 5 of 5 cannot reach p < 0.05
    # Wilson interval of P(A > B), a tie counting one half.
    assert stats.improvement_interval([1] * 5) == pytest.approx(wilson(5, 5))
    assert stats.improvement_interval([1] * 6 + [-1]) == pytest.approx(wilson(6, 7))
    assert stats.improvement_interval([1, 1, 0, -1]) == pytest.approx(wilson(2.5, 4))
    assert wilson(5, 5)[0] == pytest.approx(0.5655, abs=1e-4)
    # t interval of a mean: [1, 2, 3] is 2 +- t(0.975, 2) * 1/sqrt(3) = 2 +- 2.4841.
    low, high = stats.mean_interval([1.0, 2.0, 3.0])
    assert (low, high) == pytest.approx((2 - 2.48414, 2 + 2.48414), abs=1e-4)
    assert all(map(math.isnan, stats.mean_interval([3.0])))  # n too small: no interval
    # Cut at what the metric can take: three seeds at 69-100% accuracy reach past 100 uncut.
    uncut = stats.mean_interval([70.0, 90.0, 100.0])
    assert uncut[1] > 100
    assert stats.mean_interval([70.0, 90.0, 100.0], stats.metric_bounds("test_accuracy")) == (
        pytest.approx(uncut[0]), 100.0)  # fmt: skip
    assert stats.metric_bounds("train_time") == (0.0, math.inf)
    assert stats.probability_of_improvement([1, 2, -1, 0]) == pytest.approx(0.625)


def paired(differences: list[float]) -> pd.DataFrame:
    """Runs of levels a and b, one pair per seed, b - a given by ``differences``."""
    rows = [{"factor": level, "seed": seed, "acc": 50.0 + (d if level == "a" else 0)}
            for seed, d in enumerate(differences) for level in ("a", "b")]  # fmt: skip
    return pd.DataFrame(rows)


@pytest.mark.parametrize(
    ("differences", "outcome"),
    [
        ([1.0] * 4, "indistinguishable"),  # 4 of 4: n too small
        ([1.0] * 5, "indistinguishable"),  # 5 of 5: Wilson clears 0.5, but p = 0.0625
        ([1.0] * 6, "greater"),  # 6 of 6: p = 0.031, Wilson [0.61, 1]
        ([1.0] * 6 + [-1.0], "indistinguishable"),  # 6 of 7: p = 0.125
        ([1.0] * 9 + [-1.0], "greater"),  # 9 of 10: p = 0.021, Wilson [0.60, 0.98]
        ([-1.0] * 7, "less"),
    ],
)  # fmt: skip
def test_a_verdict_needs_a_clear_interval_and_a_significant_sign_test(differences, outcome):
    result = stats.compare(paired(differences), "factor", "a", "b", "acc", ["factor"])
    assert result.pairs == len(differences) and result.outcome == outcome


def test_rank_pairing_with_unequal_differences_and_one_to_one_pairs():
    rows = []
    for seed in range(5):
        for optimizer, rates in (("adam", (1e-3, 1e-4)), ("sgd", (1e-2, 1e-3))):
            for rank, lr in enumerate(rates):
                score = 50 + (seed * 1.5 if optimizer == "adam" else 0) - 3 * rank + seed
                if optimizer == "adam" and seed == 0 and rank == 1:
                    score -= 2  # one loss, so that P(A > B) is not a degenerate 1
                rows.append({"optimizer": optimizer, "lr": lr, "seed": seed, "acc": score,
                             "index": len(rows)})  # fmt: skip
    frame = stats.with_ranks(pd.DataFrame(rows), ["optimizer", "lr"])
    result = stats.compare(frame, "optimizer", "adam", "sgd", "acc", ["optimizer", "lr"])
    assert result.pairs == 10  # matched by the rank of the learning rate within each optimizer
    differences = [seed * 1.5 for seed in range(5) for _ in range(2)]
    differences[1] -= 2  # seed 0, the lower rate
    assert result.mean_difference == pytest.approx(np.mean(differences))
    wins = sum(d > 0 for d in differences) + 0.5 * sum(d == 0 for d in differences)
    assert result.p_a_greater == pytest.approx(wins / 10)
    assert result.p_ci == pytest.approx(wilson(wins, 10))
    # The same configuration and seed run again (a changed spec): one pair, the latest run.
    again = pd.concat([frame, frame[frame["optimizer"] == "adam"].assign(acc=0.0, index=99)])
    rerun = stats.compare(again, "optimizer", "adam", "sgd", "acc", ["optimizer", "lr"])
    assert rerun.pairs == 10 and rerun.mean_a == 0.0


def test_holm_adjusts_the_sign_tests_of_a_table():
    made = [stats.compare(paired(d), "factor", "a", "b", "acc", ["factor"])
            for d in ([1.0] * 8, [1.0] * 6, [1.0] * 7)]  # fmt: skip
    raw = [c.sign_p for c in made]
    assert raw == pytest.approx([2 / 256, 2 / 64, 2 / 128])
    adjusted = [c.adjusted_p for c in stats.holm(made)]
    # Holm: smallest x3, next x2 (at least the previous), largest x1 (at least the previous).
    assert adjusted == pytest.approx([3 * 2 / 256, 2 / 64, 2 * 2 / 128])
    assert [c.outcome for c in stats.holm(made)] == ["greater", "greater", "greater"]


def test_holm_adjusted_is_statsmodels_holm():
    """The adjustment written here gives statsmodels' values, ties and p-values near 1 too."""
    from statsmodels.stats.multitest import multipletests

    rng = np.random.default_rng(3)
    cases = [[0.5], [0.01, 0.04, 0.03, 0.2], [0.02, 0.02, 0.02], [0.3, 0.9, 0.6, 0.8, 0.001]]
    cases += [list(rng.uniform(0, 0.2, size)) for size in (2, 7, 30)]
    cases += [list(rng.choice([0.001, 0.01, 0.05, 0.5], 12))]  # many ties
    for p_values in cases:
        expected = multipletests(p_values, method="holm")[1]
        np.testing.assert_allclose(stats.holm_adjusted(p_values), expected, rtol=1e-12)


def claim_frame(sgd_differences: list[float]) -> pd.DataFrame:
    """Runs of batch norm vs dropout for three optimizers, one pair per seed: Adam's and
    RMSprop's pairs split evenly (no verdict), SGD's differences (batch norm - dropout) given."""
    rows = []
    for optimizer, differences in (("adam", [1.0, -1.0] * 4), ("rmsprop", [2.0, -2.0] * 4),
                                   ("sgd", sgd_differences)):  # fmt: skip
        for seed, difference in enumerate(differences):
            for regularization, acc in (("batch_norm", 50.0 + difference), ("dropout", 50.0)):
                rows.append({"optimizer": optimizer, "regularization": regularization,
                             "seed": seed, "test_accuracy": acc, "finished": True,
                             "stop_reason": "patience"})  # fmt: skip
    return pd.DataFrame(rows)


@pytest.mark.parametrize(
    "sgd_differences, sign_p, holm_p, verdict",
    [
        # Dropout wins 6 of 6 for SGD: p = 2/64 alone, but one of three chances: x3 = 0.094.
        ([-1.0] * 6, 2 / 64, 3 * 2 / 64, "inconclusive"),
        # 8 of 8: p = 2/256, x3 = 0.023, still below 0.05.
        ([-1.0] * 8, 2 / 256, 3 * 2 / 256, "contradicted"),
    ],
)
def test_a_claim_is_contradicted_only_past_holm_over_its_tests(
    sgd_differences, sign_p, holm_p, verdict
):
    """Claim a (batch norm beats dropout for every optimizer) has three tests: any one going
    the other way would contradict it, so those are judged with their sign tests Holm-adjusted
    over the three (the Adam and RMSprop tests, p = 1, leave SGD's smallest p multiplied by 3)."""
    (claim,) = [c for c in load_claims("seed-report") if c.id == "a"]
    frame = claim_frame(sgd_differences)
    (finding,) = judge_claims([claim], frame, ["optimizer", "regularization"])
    sgd = {e.context: e.comparison for e in finding.evidence}["optimizer=sgd"]
    assert sgd.sign_p == pytest.approx(sign_p) and sgd.adjusted_p == pytest.approx(holm_p)
    assert finding.verdict == verdict
    shown = [e.describe(finding.unit) for e in finding.evidence if e.context == "optimizer=sgd"]
    assert f"(Holm over the claim's tests: {holm_p:.3g})" in shown[0]


def test_a_claim_is_supported_when_every_test_is_each_at_alpha():
    """All three tests must hold for "for every optimizer": an intersection-union test, so each
    is judged at 0.05 unadjusted (6 of 6 wins, p = 2/64, supports where x3 would not), and the
    page shows no Holm p for it."""
    (claim,) = [c for c in load_claims("seed-report") if c.id == "a"]
    rows = claim_frame([1.0] * 6)
    rows = rows[rows["seed"] < 6].copy()
    wins = rows["regularization"] == "batch_norm"
    rows.loc[wins, "test_accuracy"] = 51.0 + rows.loc[wins, "seed"]  # every optimizer: 6 of 6
    (finding,) = judge_claims([claim], rows, ["optimizer", "regularization"])
    assert [e.comparison.sign_p for e in finding.evidence] == pytest.approx([2 / 64] * 3)
    assert finding.verdict == "supported"
    assert not any("Holm" in e.describe(finding.unit) for e in finding.evidence)


# --- command line and bad input ---------------------------------------------------------------


def test_user_claims_file_is_used(fixture_report, tmp_path, capsys):
    """`cnnsweep report --claims FILE`: the page re-tests the user's claims, not the seed
    report's (one report drawn for both the command and the claims file)."""
    store, _, _ = fixture_report
    claims = tmp_path / "claims.toml"
    claims.write_text(
        '[[claims]]\nid = "z"\nclaim = "SGD beats Adam."\nmetric = "test_accuracy"\n'
        'tests = [{ factor = "optimizer", greater = "sgd", lesser = "adam" }]\n'
    )
    out = tmp_path / "cli-report"
    args = ["report", "--study", "fixture", "--store", store.url, "-o", str(out)]
    assert main([*args, "--claims", str(claims)]) == 0
    assert "report written to" in capsys.readouterr().out
    html = (out / "report.html").read_text()
    assert verdicts(html) == {"z": "contradicted"} and "SGD beats Adam." in html


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["report", "--study", "nothing", "-o", "OUT"], "no study store at"),
        (["report", "--study", "absent", "--store", "STORE", "-o", "OUT"], "no study 'absent'"),
        (["report", "--study", "empty", "--store", "STORE", "-o", "OUT"],
         "study 'empty' has no runs to report"),
        (["report", "--study", "fixture", "--store", "STORE", "-o", "FILE/sub"],
         "cannot write the report to"),
        (["report", "--study", "fixture", "--store", "STORE", "-o", "OUT", "--claims", "BAD"],
         "malformed TOML in"),
        (["report", "--study", "fixture", "--store", "postgresql://u:pw9@127.0.0.1:9/x", "-o",
          "OUT"], "cannot reach store"),
    ],
)  # fmt: skip
def test_bad_report_input(args, message, fixture_report, tmp_path, capsys, monkeypatch):
    store, _, _ = fixture_report
    monkeypatch.chdir(tmp_path)
    Store.open_or_create(store.url, "empty")
    (tmp_path / "afile").write_text("x")
    (tmp_path / "bad.toml").write_text("[[claims]\n")
    replace = {"OUT": str(tmp_path / "out"), "STORE": store.url, "FILE/sub": "afile/sub",
               "BAD": str(tmp_path / "bad.toml")}  # fmt: skip
    assert main([replace.get(a, a) for a in args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "pw9" not in err
    assert not (tmp_path / "out" / "report.html").exists()
    assert not list((tmp_path / "out").glob("*")) if (tmp_path / "out").exists() else True


def test_claims_file_errors_name_the_problem(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[[claims]]\nid = "x"\nclaim = "c"\nmetric = "m"\ntests = []\n')
    with pytest.raises(ConfigError, match="tests"):
        load_claims(path)
    with pytest.raises(ConfigError, match="cannot read claims file"):
        load_claims(tmp_path / "none.toml")
    assert len(load_claims("seed-report")) == 7
    assert load_claims(None) == []


def test_empty_study_is_refused(tmp_path):
    store = Store.open_or_create(str(tmp_path / "j.log"), "blank")
    with pytest.raises(CnnsweepError, match="has no runs"):
        study_data(store)


def test_every_factor_is_compared_level_against_level(fixture_report):
    _, files, _ = fixture_report
    table = files.html.read_text().split('id="factors"')[1].split("</table>")[0]
    rows = [[cell.split(">")[-1] for cell in row.split("</td>")[:-1]]
            for row in table.split("<tr>")[2:]]  # fmt: skip
    by_key = {(r[0], r[1], r[2], r[3]): r for r in rows}
    regularization = by_key[("regularization", "", "batch_norm", "dropout")]
    # 48 pairs less the 3 that the failed and the two waiting runs break (the diverged run is
    # finished: it pairs).
    assert int(regularization[4]) == 45 and regularization[-1] == "batch_norm better"
    assert 7.0 < float(regularization[5]) < 10.0  # the planted +8 (the diverged run pulls it)
    # learning rates are compared within each optimizer only
    assert ("lr", "optimizer=adam", "0.001", "0.0001") in by_key
    assert ("lr", "optimizer=sgd", "0.01", "0.001") in by_key
    assert not any(k[0] == "lr" and k[1] == "" for k in by_key)
    assert by_key[("batch_size", "", "32", "64")][-1] == "not distinguishable"  # no accuracy effect


def test_a_study_with_no_finished_runs_draws_nothing_and_says_so(tmp_path, recwarn):
    from cnnsweep.runner import open_study_store, run_dicts
    from cnnsweep.spec import load_study

    study = load_study("seed48", "quick")
    store = open_study_store(study, str(tmp_path / "journal.log"), False)
    store.enqueue_missing(run_dicts(study))
    files = build_report(study_data(store), tmp_path / "out")
    assert files.figures == []
    assert "No finished runs yet: nothing to draw." in files.html.read_text()
    assert [str(w.message) for w in recwarn] == []  # matplotlib had nothing to warn about


def test_a_study_whose_every_run_diverged_at_once_is_reported_without_curves(tmp_path):
    """Every run diverged in its first epoch (no validation accuracy in any epoch): the report
    is written, with no learning-curve figure (there is no curve to draw). Before, building the
    curves' frame raised a pandas error and `cnnsweep run` ended in a traceback."""
    from cnnsweep.runner import open_study_store, run_dicts
    from cnnsweep.spec import load_study
    from cnnsweep.store import this_worker

    study = load_study("seed48-holdout", "quick")
    store = open_study_store(study, str(tmp_path / "journal.log"), False)
    store.enqueue_missing(run_dicts(study)[:2])
    while (claim := store.claim(this_worker())) is not None:
        epoch = {"epoch": 1, "train_loss": float("nan"), "train_accuracy": 10.0,
                 "val_loss": None, "val_accuracy": None, "epoch_time": 0.1}  # fmt: skip
        store.finish(claim.trial_id, {"stop_reason": "diverged", "epochs_trained": 1,
                                      "test_accuracy": 10.0, "history": [epoch]}, True)  # fmt: skip
    files = build_report(study_data(store), tmp_path / "out")
    assert not any(f.name.startswith("learning_curves") for f in files.figures), files.figures
    html = files.html.read_text()
    assert "2 diverged" in html
    # The best configuration is one of the two, at chance: the summary and its card say so.
    # (two seeds of one configuration)
    assert files.summary[0].endswith(
        "test_accuracy 10.00 (mean of 2 runs, 95% CI [10.00, 10.00], all diverged)"
    ), files.summary
    card = html.split("Best configuration")[1].split("What mattered most")[0]
    assert "<b>all diverged</b>" in card


def test_epochs_are_drawn_on_whole_numbers(fixture_report):
    from cnnsweep.report.figures import metric_by_factor
    from cnnsweep.report.gather import by_level
    from cnnsweep.report.tidy import tidy_frame

    data = study_data(fixture_report[0])
    frame = tidy_frame(data.results, ["optimizer", "lr", "batch_size", "split", "regularization"])
    points = by_level(frame, "split", "epochs_trained")
    (ax,) = metric_by_factor(points, "split", "epochs_trained", "").figure.axes
    ticks = ax.get_yticks()
    assert len(ticks) >= 2 and all(float(t).is_integer() for t in ticks)
    points = np.concatenate([c.get_offsets()[:, 1] for c in ax.collections])
    assert all(float(y).is_integer() for y in points)  # no vertical jitter on whole epochs
