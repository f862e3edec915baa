"""Search instead of a grid: Optuna samples the runs, workers on any machine share one search
through the store, a pruner stops runs that fall behind; pruned runs are kept and never retried."""

import optuna
import pytest

from cnnsweep.cli import main
from cnnsweep.store import Store, this_worker
from tests.conftest import write_spec

SEARCH = """
name = "search"
protocol = "holdout"
data = "{data}"

[fixed]
width = 0.0625
max_epochs = 4
patience = 4
eval_batch_size = 256
train_eval_images = 0

[search]
sampler = "random"   # the first draws of TPE are random too; this keeps the test short
trials = 8
pruner = "median"
lr = {{ low = 1e-7, high = 3e-2, log = true }}   # much of it too small to learn: pruned
optimizer = ["adam", "sgd"]
"""


# One worker draws a reproducible sequence (the sampler is seeded by the draw's number), so its
# pruning is certain. Workers sharing one search: below, and racing at the store further down.
@pytest.mark.parametrize(("backend", "workers"), [("journal", 1), ("postgresql", 1)])
def test_a_search_with_a_pruner_completes_its_trials_some_pruned(backend, workers, tmp_path,
                                                                 bars_folder, request,
                                                                 monkeypatch):  # fmt: skip
    monkeypatch.chdir(tmp_path)
    spec = write_spec(tmp_path / "search.toml", SEARCH.format(data=bars_folder))
    args = ["run", str(spec), "--workers", str(workers), "--devices", "cpu"]
    url = request.getfixturevalue("postgres_url") if backend == "postgresql" else None
    args += ["--store", url, "--no-report"] if url else []  # the report: checked on the journal
    assert main(args) == 0
    store = Store.open(url or str(tmp_path / "runs" / "search" / "journal.log"), "search")
    records = store.records()
    # The budget, give or take a draw made at the very moment another worker drew the last.
    assert 8 <= len(records) <= 7 + workers
    states = [r.state for r in records]
    assert set(states) <= {"complete", "pruned"}, states
    if workers == 1:
        assert "pruned" in states, states
    else:  # both workers drew runs from the one search
        assert len({r.worker["pid"] for r in records}) == 2
    assert len({r.run_id for r in records}) == len(records)
    pruned = [r for r in records if r.state == "pruned"]
    assert all(r.result["stop_reason"] == "pruned" and len(r.history) < 4 for r in pruned)
    assert all(1e-7 <= r.config["lr"] <= 3e-2 for r in records)
    # Optuna sees a search it could go on with: parameters, values, pruned trials.
    study = optuna.load_study(study_name="search", storage=store.storage)
    trials = [t for t in study.trials if not t.user_attrs.get("duplicate")]
    assert {t.state for t in trials} <= {optuna.trial.TrialState.COMPLETE,
                                         optuna.trial.TrialState.PRUNED}  # fmt: skip
    assert all(set(t.params) == {"lr", "optimizer"} for t in trials)
    if backend == "journal":  # running again draws nothing more and retries no pruned run
        assert main([*args, "--no-report"]) == 0
        assert [(r.run_id, r.state) for r in store.records()] == [(r.run_id, r.state)
                                                                   for r in records]  # fmt: skip
    if backend != "journal":
        return
    html = (tmp_path / "runs" / "search" / "report" / "report.html").read_text()
    assert 'id="search"' in html and "pruned" in html and 'data-setting="lr"' in html
    assert "100% done" in html  # pruned runs are done: the search decided them
    assert (tmp_path / "runs" / "search" / "report" / "optimisation_history.png").is_file()


def test_a_search_draws_no_more_than_its_budget(tmp_path, bars_folder):
    from cnnsweep import search
    from cnnsweep.runner import open_study_store
    from cnnsweep.spec import load_study

    spec = write_spec(
        tmp_path / "search.toml",
        SEARCH.format(data=bars_folder).replace("trials = 8", "trials = 3"),
    )
    study = load_study(str(spec))
    store = open_study_store(study, str(tmp_path / "journal.log"), False)
    me = this_worker()

    def draw():
        return store.ask(
            search.sampler(study, draw=0),
            search.distributions(study),
            lambda params, n: search.run_of(study, params, n, 1),
            me,
            3,
        )

    def unmakeable(params, n):
        raise ValueError("no run can be made of these parameters")

    with pytest.raises(ValueError):  # the draw is set aside: not a run, not left running
        store.ask(search.sampler(study, draw=0), search.distributions(study), unmakeable, me, 3)
    assert store.trial_states() == [(None, "failed")] and not store.has_pending()
    (aside,) = store.storage.get_all_trials(store.study_id)
    assert aside.user_attrs == {"duplicate": True} and store.records() == []
    drawn = [draw() for _ in range(3)]
    assert [c.label.split()[0] for c in drawn] == ["trial=1", "trial=2", "trial=3"]
    assert draw() is None  # spent: nothing is sampled, nothing stored
    assert len(store.trial_states()) == 1 + 3
    # A pruned run closes as Optuna's PRUNED and is never enqueued again.
    assert store.finish(drawn[0].trial_id, {"test_accuracy": 10.0, "history": []}, False,
                        pruned=True)  # fmt: skip
    assert store.records()[0].state == "pruned"
    assert store.enqueue_missing([{"run_id": drawn[0].run_id, "index": 0, "label": "x",
                                   "config": {}, "factors": {}}]) == 0  # fmt: skip


def test_samplers_and_pruners_are_optunas_own(tmp_path):
    from cnnsweep import search
    from cnnsweep.spec import Study, parse_spec

    def study(options: str) -> Study:
        text = f'name = "s"\n[fixed]\nmax_epochs = 9\n[search]\ntrials = 4\n{options}\n'
        return Study(parse_spec(text + "batch_size = [32, 64]\n", "s"), None)

    hyperband = search.pruner(study('pruner = "hyperband"'))
    assert isinstance(hyperband, optuna.pruners.HyperbandPruner)
    assert hyperband._max_resource == 9  # the runs' epoch limit
    assert isinstance(search.pruner(study("")), optuna.pruners.NopPruner)
    assert isinstance(search.sampler(study('sampler = "grid"'), 0), optuna.samplers.GridSampler)
    assert isinstance(search.sampler(study(""), 0), optuna.samplers.TPESampler)
    space = search.distributions(
        study(
            "lr = { low = 1e-4, high = 1e-1, log = true }\n"
            "max_train_images = { low = 100, high = 1000 }"
        )
    )
    assert space["lr"] == optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)
    assert space["max_train_images"] == optuna.distributions.IntDistribution(100, 1000)
    assert space["batch_size"] == optuna.distributions.CategoricalDistribution([32, 64])


def test_search_draws_shared_by_racing_workers_keep_the_budget(tmp_path, bars_folder):
    """Six workers (threads, each with its own store connection) draw from one search of 4
    trials at the same moment: each draw is a distinct run, and the budget is overshot by at
    most workers - 1 (those that drew at the very instant the last run was taken)."""
    from cnnsweep import search
    from cnnsweep.runner import open_study_store
    from cnnsweep.spec import load_study
    from tests.test_store import race

    spec = write_spec(
        tmp_path / "search.toml",
        SEARCH.format(data=bars_folder).replace("trials = 8", "trials = 4"),
    )
    study = load_study(str(spec))
    journal = str(tmp_path / "journal.log")
    open_study_store(study, journal, False)
    stores = [Store.open(journal, "search") for _ in range(6)]

    def draw(store):
        return store.ask(
            search.sampler(study, draw=0),
            search.distributions(study),
            lambda params, n: search.run_of(study, params, n, 1),
            this_worker(),
            4,
        )

    drawn = [c for _ in range(2) for c in race([lambda s=s: draw(s) for s in stores]) if c]
    records = stores[0].records()
    assert 4 <= len(drawn) == len(records) <= 4 + 5
    assert len({r.run_id for r in records}) == len({r.index for r in records}) == len(records)
    assert all(r.state == "running" for r in records)  # each held by the worker that drew it
