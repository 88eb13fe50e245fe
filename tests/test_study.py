"""The main job end to end on a tiny study: each sweep a run directory with its own report, and
the study report's claims table with a verdict for every claim."""

import re

import numpy as np

from l1jax.analysis import claims as C
from l1jax.study.article import article_script
from l1jax.engine.config import config_from_dict
from l1jax.engine.results import Results
from l1jax.study.reproduce import report, reproduce
from l1jax.study.study import study


def test_tiny_study_runs_reports_and_writes_its_own_report(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 2))
    rows = ["a,b,y"] + [f"{u},{v},{2 * u - v + rng.laplace()}" for u, v in x]
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    train = {"epochs": 10, "learning_rate": [0.1, 0.3]}
    article = lambda batch, noise="gaussian": config_from_dict(
        {"data": {"test_size": 100, "coupling": "nested", "noise": noise},
         "train": {"epochs": 10, "learning_rate": [0.01], "batch_size": [batch]},
         "sweep": {"sizes": [20, 200], "seeds": 8}})
    configs = {
        "article": article("full"), "article_minibatch": article(8),
        "main": config_from_dict({"data": {"test_size": 200, "coupling": "nested"},
                                  "train": {**train, "batch_size": ["full", 16]},
                                  "sweep": {"sizes": [20, 60], "seeds": 6}}),
        "real": config_from_dict({"data": {"source": "csv", "path": str(tmp_path / "t.csv"), "target": "y",
                                           "standardize": True},
                                  "train": train, "sweep": {"sizes": [15, 40], "seeds": 6}}),
        "noise_laplace": article("full", "laplace")}
    out = tmp_path / "study"
    r = study(out, seeds_article=40, configs=configs, figures_beside=True)  # as the command line runs it
    text = r.report.read_text()
    figs = ["curves", "final", "heatmaps", "rate", "spread", "steps"]
    assert sorted(p.name for p in (out / "figures").glob("*.png")) == ["article.png"] + sorted(
        f"{s}_{f}.png" for s in configs for f in figs)
    for sweep, cfg in configs.items():  # each sweep is an ordinary run directory with its own report
        assert (out / sweep / "results.npz").is_file() and (out / sweep / "report" / "metrics.csv").is_file()
        assert Results.load(out / sweep).config == cfg
    # the answer comes first, with the article setting's numbers and the theory's terms
    sections = re.findall(r"^## (.*)$", text, flags=re.M)
    assert sections[:6] == ["The answer", "The article's setting, claim by claim",
                            "Why: the theory of the rate, against the engine",
                            "The whole curve from theory, against the engine", "The wider sweeps",
                            "Beyond gaussian noise"] and sections[-1] == "Hardware and stage timings"
    answer = text.split("## The article's setting")[0]
    assert "In the article's own setting" in answer and "‖G‖² = " in answer and "minibatch twin" in answer
    assert "The whole curve from theory" in answer and " se at n = " in answer
    rows = [l for l in text.splitlines() if re.match(r"\| \d[ab]? \|", l)]
    assert len(rows) == 6 * 2  # six findings, in the article-setting and the wider-sweeps tables
    verdicts = {C.SUPPORTED, C.CONTRADICTED, C.NO_DIFFERENCE, C.DEPENDS, C.INCONCLUSIVE, C.NOT_APPLICABLE}
    for row in rows:
        cells = [c.strip().strip("*").split(" (")[0].strip("*") for c in row.split("|")]
        assert cells[3] in verdicts and cells[4] in verdicts, row
    assert "steps uphill" in answer and "loss dropping: **contradicted**" in answer
    # the csv sweep's pool of 64 rows holds only n = 15 within n/N <= 0.5: no size comparison
    assert "(n/N = 0.23, 0.62 at n = 15, 40)" in answer and "no second size has n/N ≤ 0.5" in answer
    real = (out / "real" / "report" / "report.md").read_text()
    assert "fewer than two sizes with n/N <= 0.5 of the training pool of N = 64 rows" in real
    assert "No size but n = 15 is within n/N ≤ 0.5" in real
    # a second study reuses the finished sweeps (resumable like any `l1jax run`)
    again = study(out, seeds_article=40, configs={"main": configs["main"]})
    assert Results.load(out / "main").meta["resumed_chunks"] == 1 and again.report == r.report


def test_seed_command_reports_the_three_ways():
    r = reproduce(seeds=2)
    np.testing.assert_array_equal(r.article, article_script(0))
    assert (np.diff(r.article, axis=1) > 0).all()  # the article's own losses climb every epoch
    assert (r.seed_final > r.initial).all() and (r.l1_final < r.initial).all()
    text = report(r)
    assert f"{r.article[0, -1]:.4f}" in text and "ascends the squared error" in text
