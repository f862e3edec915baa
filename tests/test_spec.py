import pytest

from cnnsweep.cli import main
from cnnsweep.errors import ConfigError
from cnnsweep.spec import Study, builtin_specs, load_study, parse_spec
from tests.conftest import write_spec


def report_configs():
    """The report's own loop (run_experiments.py, lines 13-29), verbatim in substance."""
    configs = []
    learning_rates = {"adam": [0.001, 0.0001], "sgd": [0.01, 0.001], "rmsprop": [0.001, 0.0001]}
    for opt in ["adam", "sgd", "rmsprop"]:
        for lr in learning_rates[opt]:
            for bs in [32, 64]:
                for split in [(0.7, 0.3), (0.9, 0.1)]:
                    configs.append((lr, bs, opt, split, True, False))
                    configs.append((lr, bs, opt, split, False, True))
    return configs


def test_seed48_is_the_reports_grid_in_the_reports_order():
    runs = load_study("seed48").runs()
    ours = [
        (c.lr, c.batch_size, c.optimizer, (c.split, round(1 - c.split, 10)), c.batch_norm,
         c.dropout)
        for c in (run.config for run in runs)
    ]  # fmt: skip
    assert ours == report_configs()
    config = runs[0].config
    assert (config.protocol, config.max_epochs, config.patience) == ("seed", 50, 2)
    assert config.monitor == "train_accuracy" and config.width == 1.0
    assert len({run.run_id for run in runs}) == 48


def test_presets_and_names():
    quick = load_study("seed48", "quick")
    assert quick.name == "seed48-quick"
    assert {r.config.width for r in quick.runs()} == {0.25}
    assert [r.run_id for r in quick.runs()] != [r.run_id for r in load_study("seed48").runs()]
    # lite (the main job in 0.7.3) and cpu (since 0.7.4): the same 48 configurations in the same
    # order at less work, each stored apart (other ids, another folder), so that a stored study
    # of an earlier preset stays as it is.
    taken = {r.run_id for r in quick.runs()}
    lighter = {"lite": (0.125, 8000, 4, 2, 1000), "cpu": (0.125, 10000, 3, 2, 500)}
    for preset, settings in lighter.items():
        study = load_study("seed48", preset)
        assert study.name == f"seed48-{preset}"
        assert [r.label for r in study.runs()] == [r.label for r in quick.runs()]
        configs = [r.config for r in study.runs()]
        assert {(c.width, c.max_train_images, c.max_epochs, c.patience, c.train_eval_images)
                for c in configs} == {settings}  # fmt: skip
        ids = {r.run_id for r in study.runs()}
        assert not ids & taken, preset
        taken |= ids
    assert len(load_study("seed48-holdout").runs()) == 144
    assert {"seed48", "seed48-holdout"} <= set(builtin_specs())


def test_studies_lists_each_built_in_with_its_runs_and_presets(capsys):
    assert main(["studies"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line for line in lines}
    assert set(rows) == set(builtin_specs())
    assert " 48 runs  presets: full, quick, lite, cpu  The report's 48-run grid" in rows["seed48"]
    assert " 144 runs  presets: full, quick " in rows["seed48-holdout"]
    starts = {line.index(load_study(name).spec.description) for name, line in rows.items()}
    assert len(starts) == 1  # the descriptions line up


def test_run_ids_are_stable_and_depend_on_the_config():
    a = load_study("seed48").runs()
    b = load_study("seed48").runs()
    assert [r.run_id for r in a] == [r.run_id for r in b]
    assert a[0].label.startswith("optimizer=adam lr=0.001 batch_size=32 split=0.7")


def test_seeds_can_be_a_count(tmp_path):
    spec = parse_spec('name = "s"\nseeds = 3\n[grid]\nlr = [0.1, 0.2]', "t")
    assert spec.seeds == [0, 1, 2]


def test_dry_run_prints_every_run(capsys):
    assert main(["run", "seed48", "--dry-run"]) == 0
    captured = capsys.readouterr()
    out = captured.out.splitlines()
    assert len(out) == 48 and "regularization=dropout" in out[1]
    # No data given and none cached: the estimate says what it needs; nothing is downloaded.
    assert "estimate: needs the data; give --data PATH" in captured.err


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('name = "x"\n[grid\nlr = [1]', "malformed TOML in .*line 2"),
        ('name = "x"\ncolour = "red"\n[grid]\nlr = [0.1]', "unknown key 'colour'"),
        ('name = "x"\n[fixed]\ncolour = 1\n[grid]\nlr = [0.1]',
         r"unknown setting 'colour' in \[fixed\]"),
        ('name = "x"\nseeds = "many"\n[grid]\nlr = [0.1]', "invalid seeds"),
        ('name = "x"\n[grid]\nlr = ["fast"]', r"run 1 \(lr=fast\): invalid lr='fast'"),
        ('name = "x"\n[grid]', "grid is empty"),
        ('name = "x"\n[grid]\nlr = []', "grid axis 'lr' is empty"),
        ('name = "x"\n[grid]\ncolour = [1, 2]', "grid axis 'colour' is not a setting"),
        ('name = "x"\n[grid]\noptimizer = ["adam", "sgd"]\nlr = { by = "optimizer", adam = [0.1] }',
         "grid axis 'lr' has no values for optimizer='sgd'"),
        ('name = "x"\n[grid]\nlr = { by = "optimizer", adam = [0.1] }', "no earlier axis"),
        ('name = "x"\n[grid]\nlr = [0.1, 0.1]', "runs 1 and 2 .* are the same configuration"),
        ('name = "x y"\n[grid]\nlr = [0.1]', "invalid name"),
    ],
)  # fmt: skip
def test_bad_specs_are_one_line_errors(tmp_path, toml, message):
    path = write_spec(tmp_path / "study.toml", toml)
    with pytest.raises(ConfigError, match=message) as error:
        load_study(str(path))
    assert "\n" not in str(error.value)


def test_unknown_builtin_lists_them_and_unknown_preset(capsys):
    with pytest.raises(
        ConfigError, match=r"unknown study .seed49.*built-in studies: future, seed48"
    ):
        load_study("seed49")
    with pytest.raises(ConfigError, match="has no preset 'tiny'; presets: full, quick, lite, cpu"):
        load_study("seed48", "tiny")
    assert main(["run", "seed49"]) == 2
    assert capsys.readouterr().err.startswith("cnnsweep: error: unknown study 'seed49'")


def test_unreadable_spec_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read study spec"):
        load_study(str(tmp_path / "missing.toml"))


SMALL = """
name = "small"
description = "{description}"
{claims}
[fixed]
width = 0.25
{fixed}
[grid]
optimizer = ["adam", "sgd"]
"""


def test_a_change_that_alters_no_run_updates_the_stored_spec_silently(tmp_path):
    """Description, the report's metric and claims, speed switches and measurement settings
    change no run: no --allow-spec-change needed, and the stored spec follows. A change to a
    computing setting is still refused."""
    from cnnsweep.runner import open_study_store
    from cnnsweep.spec import Study

    journal = str(tmp_path / "journal.log")

    def study(description="one", claims="", fixed=""):
        text = SMALL.format(description=description, claims=claims, fixed=fixed)
        return Study(parse_spec(text, "small"), None)

    open_study_store(study(), journal, False)
    changed = study("two", 'claims = "seed-report"\nmetric = "train_time"',
                    "train_eval_images = 100\neval_batch_size = 64\ncompile = true")  # fmt: skip
    store = open_study_store(changed, journal, False)
    assert store.document()["spec"]["claims"] == "seed-report"
    assert store.document()["spec"]["fixed"]["train_eval_images"] == 100
    with pytest.raises(ConfigError, match=r"spec.fixed.max_epochs: \"\(absent\)\" -> 3"):
        open_study_store(study(fixed="max_epochs = 3"), journal, False)


def test_a_user_spec_names_its_claims_file_beside_it(tmp_path):
    from cnnsweep.spec import load_spec

    spec = write_spec(tmp_path / "mine.toml", SMALL.format(
        description="d", claims='claims = "my-claims.toml"', fixed=""))  # fmt: skip
    assert load_spec(str(spec)).claims == str(tmp_path / "my-claims.toml")
    with pytest.raises(ConfigError, match="unknown metric 'accuracy'"):
        parse_spec(SMALL.format(description="d", claims='metric = "accuracy"', fixed=""), "x")


def test_a_kfold_study_runs_every_configuration_once_per_fold(tmp_path):
    text = """
name = "cv"
protocol = "kfold"
seeds = [0, 1]
[fixed]
folds = 3
[grid]
optimizer = ["adam", "sgd"]
"""
    study = Study(parse_spec(text, "cv"), None)
    runs = study.runs()
    assert len(runs) == 2 * 2 * 3 == study.count_runs(1000)
    assert [r.config.fold for r in runs[:6]] == [0, 1, 2, 0, 1, 2]
    assert runs[1].label == "optimizer=adam seed=0 fold=1"
    assert len({r.run_id for r in runs}) == 12
    with pytest.raises(ConfigError, match="'fold' in \\[fixed\\]: a kfold study runs every fold"):
        parse_spec(text.replace("folds = 3", "fold = 1"), "cv")
    with pytest.raises(ConfigError, match="folds"):
        Study(parse_spec(text.replace("folds = 3", "folds = 1"), "cv"), None).runs()
