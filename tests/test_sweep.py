"""`sertune sweep`: spec expansion and validation, the local executor, resuming, failures, shared caches."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from sertune.sweep.executors import LocalExecutor
from sertune.sweep.layout import SweepDir
from sertune.sweep.spec import expand
from sertune.sweep.tasks import Task, run_task, train_task

from conftest import save_tiny_encoder, without_times
from slurm_cluster import SlurmCluster, slurm_cluster_fixture  # noqa: F401  (the fixture is used by name)

TRAIN = {"epochs": 2, "batch_size": 8, "eval_batch_size": 8, "workers": 0, "max_seconds": 2.0, "lr": 2e-3, "seed": 3}
BASE = {"folds": ["1", "2"], "head": {"normalization": "speaker"}, "train": TRAIN, "tuning": {"lora_rank": 4}}


@pytest.fixture(scope="module")
def backbones(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two tiny random Whisper encoders (different weights): the sweep's two backbones."""
    root = tmp_path_factory.mktemp("backbones")
    return [save_tiny_encoder("whisper", root / f"whisper-{seed}", seed=seed) for seed in (0, 1)]


def write_spec(path: Path, corpus: Path, grid: dict, base: dict | None = None, **extra: object) -> Path:
    spec = {"base": {**(base or BASE), "corpus": str(corpus)}, "grid": grid, **extra}
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def sweep_command(spec: Path, out: Path, *options: str) -> list[str]:
    return [sys.executable, "-m", "sertune", "sweep", str(spec), "--out", str(out), *options]


def run_sweep(spec: Path, out: Path, cache: Path, *options: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "SERTUNE_CACHE": str(cache)}
    return subprocess.run(sweep_command(spec, out, *options), capture_output=True, text=True, env=env, timeout=900)


def slurm_options(cluster: SlurmCluster, cpus: int = 1) -> list[str]:
    return ["--executor", "slurm", "--partition", cluster.partition, "--gpus-per-cell", "0", "--cpus-per-cell",
            str(cpus), "--mem-gb", "2", "--time-limit", "10"]


def all_metrics(out: Path) -> dict[str, dict]:
    """Every fold's metrics.json of a sweep, without times, keyed by cell id and fold."""
    return {f"{path.parts[-4]}/{path.parts[-2]}": without_times(json.loads(path.read_text()))
            for path in sorted(out.glob("runs/*/folds/*/metrics.json"))}


@pytest.fixture(scope="module")
def grid(backbones: list[Path]) -> dict:
    return {"backbone": [str(b) for b in backbones], "method": ["frozen", "lora"]}


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory, small_corpus: Path, grid: dict) -> tuple[Path, Path, Path]:
    """2 backbones x 2 methods x 2 folds with the local executor, 2 jobs: (spec, sweep dir, feature cache)."""
    root = tmp_path_factory.mktemp("sweep")
    spec = write_spec(root / "grid.yaml", small_corpus, grid)
    result = run_sweep(spec, root / "sweep", root / "cache", "--jobs", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    return spec, root / "sweep", root / "cache"


# -- the spec ---------------------------------------------------------------------------------------

def test_method_settings_apply_only_to_their_methods_and_ids_are_stable(tmp_path: Path) -> None:
    spec = {"base": {"corpus": str(tmp_path)}, "grid": {"method": ["frozen", "lora"], "rank": [4, 8]}}
    cells = expand(spec, "spec")
    assert [cell.name for cell in cells] == [f"{tmp_path.name}/wavlm-base-plus/{label}"
                                             for label in ("frozen", "lora-r4", "lora-r8")]
    assert [cell.config.tuning.lora_rank for cell in cells] == [16, 4, 8]
    # A value added to the grid adds cells; the others keep their ids (and so their run directories).
    more = expand({**spec, "grid": {"method": ["frozen", "lora"], "rank": [4, 8, 16]}}, "spec")
    assert [cell.id for cell in more][:3] == [cell.id for cell in cells]
    assert len({cell.id for cell in more}) == 4
    assert expand(spec, "spec")[1].id == cells[1].id
    assert cells[1].config.to_dict()["tuning"]["lora_rank"] == 4


def test_exclude_drops_the_matching_cells(tmp_path: Path) -> None:
    spec = {"base": {"corpus": str(tmp_path)},
            "grid": {"backbone": ["wavlm-base-plus", "whisper-tiny"], "method": ["lora", "prompt"]},
            "exclude": [{"backbone": "wavlm-base-plus", "method": "prompt"}]}
    assert [cell.name.split("/", 1)[1] for cell in expand(spec, "spec")] == [
        "wavlm-base-plus/lora-r16", "whisper-tiny/lora-r16", "whisper-tiny/prompt-p5"]


@pytest.mark.parametrize(("grid", "extra", "message"), [
    ({"method": ["lora"], "learning_rate": [1e-3]}, {}, "grid.learning_rate: unknown setting 'learning_rate'"),
    ({"method": ["lora"], "lr": [-1]}, {}, r"cell \(tuning.method=lora, train.lr=-1\): train.lr must be"),
    ({"method": ["lora", "lorra"]}, {}, r"cell \(tuning.method=lorra\): unknown method part 'lorra'"),
    ({}, {}, "'grid' must be a non-empty mapping"),
    ({"method": []}, {}, "grid.method must be a non-empty list"),
    ({"method": ["lora"]}, {"exclude": [{"method": "prompt"}]}, "exclude entry 1 matches no cell"),
    ({"method": ["lora"]}, {"exclude": [{"rank": 4}]}, r"exclude entry 1 names \['tuning.lora_rank'\]"),
    ({"method": ["lora"]}, {"grids": {}}, r"unknown key\(s\) \['grids'\]"),
    ({"method": ["lora"], "backbone": ["wavlm-base-pluss"]}, {}, "backbone: unknown backbone 'wavlm-base-pluss'"),
    ({"method": ["lora"], "folds": [["fold9"]]}, {}, "folds: fold 'fold9' is not in"),
])
def test_spec_errors_name_the_key_and_nothing_runs(
    cli, tmp_path: Path, small_corpus: Path, grid: dict, extra: dict, message: str
) -> None:
    spec = write_spec(tmp_path / "bad.yaml", small_corpus, grid, base={"train": {"epochs": 1}}, **extra)
    status, _, err = cli(["sweep", str(spec), "--out", str(tmp_path / "sweep")])
    assert status == 2
    assert f"sertune sweep: error: {spec}" in err
    assert __import__("re").search(message, err), err
    assert not (tmp_path / "sweep").exists()


def test_a_missing_corpus_is_reported_with_its_cell(cli, tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump({"grid": {"corpus": [str(tmp_path / "nowhere")], "method": ["lora"]}}))
    status, _, err = cli(["sweep", str(spec), "--out", str(tmp_path / "sweep")])
    assert status == 2 and "cell nowhere/wavlm-base-plus/lora-r16: corpus:" in err


# -- executors --------------------------------------------------------------------------------------

def test_local_executor_gives_each_job_its_own_gpus_or_its_share_of_the_cores(tmp_path: Path) -> None:
    executor = LocalExecutor(jobs=8, gpus_per_cell=2, gpus=["0", "1", "2", "3", "5"])
    assert executor.jobs == 2 and executor.task_gpus() == 2
    assert executor.slots() == [{"CUDA_VISIBLE_DEVICES": "0,1"}, {"CUDA_VISIBLE_DEVICES": "2,3"}]
    cpu = LocalExecutor(jobs=2, gpus_per_cell=0, gpus=["0"])
    assert cpu.task_gpus() == 0
    threads = max(1, len(os.sched_getaffinity(0)) // 2)
    assert cpu.slots() == [{"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}] * 2
    task = train_task(SweepDir(tmp_path), "abc", "x/y/lora", gpus=2)
    assert task.command()[1:8] == ["-m", "accelerate.commands.launch", "--num_processes", "2", "--multi_gpu",
                                   "-m", "sertune"]
    (tmp_path / "runs/abc").mkdir(parents=True)
    assert "--resume" not in task.command()
    (tmp_path / "runs/abc/config.yaml").write_text("corpus: x\n")
    assert task.command()[-1] == "--resume"  # decided when the task starts: a requeued job resumes


def test_a_task_records_its_error_and_an_interrupted_one_stays_pending(tmp_path: Path) -> None:
    sweep = SweepDir(tmp_path)
    failing = Task("a1", "x/y/lora", (sys.executable, "-c", "import sys; print('loading'); "
                                      "print('sertune train: error: layer 9 does not exist', file=sys.stderr); "
                                      "sys.exit(2)"))
    assert not run_task(sweep, failing)
    assert sweep.cell_state("a1").state == "failed"
    record = sweep.read_record("a1")
    assert record["error"] == "sertune train: error: layer 9 does not exist" and record["returncode"] == 2
    assert record["log"] == "logs/a1.log" and "loading" in (tmp_path / "logs/a1.log").read_text()
    killed = Task("b2", "x/y/frozen", (sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGTERM)"))
    assert not run_task(sweep, killed)
    assert sweep.read_record("b2")["state"] == "interrupted" and sweep.cell_state("b2").state == "pending"
    assert run_task(sweep, Task("a1", "x/y/lora", (sys.executable, "-c", "pass")))
    assert sweep.read_record("a1")["attempt"] == 2  # a retry is the task's second attempt
    assert sweep.cell_state("a1").state == "pending"  # succeeded, but only a run's summary.json makes it done


# -- whole sweeps -----------------------------------------------------------------------------------

@pytest.mark.slow
def test_sweep_runs_every_cell_as_a_run_directory(finished_sweep) -> None:
    _, out, _ = finished_sweep
    plan = json.loads((out / "sweep.json").read_text())
    assert plan["axes"] == ["backbone", "tuning.method"]
    assert sorted(cell["label"] for cell in plan["cells"]) == ["frozen", "frozen", "lora-r4", "lora-r4"]
    for cell in plan["cells"]:
        run = out / cell["run"]
        summary = json.loads((run / "summary.json").read_text())
        assert summary["method"] == cell["config"]["tuning"]["method"] and sorted(summary["folds"]) == ["fold1",
                                                                                                       "fold2"]
        assert yaml.safe_load((run / "config.yaml").read_text())["tuning"] == cell["config"]["tuning"]
        assert (run / "folds/fold1/checkpoint/adapter.safetensors").is_file()
        assert json.loads((out / "state" / f"{cell['id']}.json").read_text())["state"] == "done"


@pytest.mark.slow
def test_the_sweep_report_shows_the_cells_summaries(cli, tmp_path: Path, finished_sweep) -> None:
    _, out, _ = finished_sweep
    status, printed, _ = cli(["report", str(out), "--out", str(tmp_path / "report"), "--resamples", "50"])
    assert status == 0, printed
    with open(tmp_path / "report/synthetic-uar.csv", newline="") as handle:
        rows = {row["backbone"]: row for row in csv.DictReader(handle)}
    for cell in json.loads((out / "sweep.json").read_text())["cells"]:
        uar = json.loads((out / cell["run"] / "summary.json").read_text())["test"]["uar"]
        row = rows[cell["config"]["backbone"]]
        assert float(row[f"{cell['label']} mean"]) == pytest.approx(uar["mean"], abs=1e-6)
        assert float(row[f"{cell['label']} std"]) == pytest.approx(uar["std"], abs=1e-6)
        assert int(row[f"{cell['label']} n"]) == uar["n"] == 2
    for name in ("report.md", "synthetic-macro_f1.csv", "synthetic-paired.csv", "synthetic-parameters.csv",
                 "uar_vs_params.png"):
        assert (tmp_path / "report" / name).stat().st_size > 0


@pytest.mark.slow
def test_frozen_cells_of_a_backbone_share_one_cache_filled_once(finished_sweep, small_corpus: Path) -> None:
    _, out, cache = finished_sweep
    clips = sum(1 for _ in (small_corpus / "audio").iterdir())
    entries = sorted(path for path in (cache / "features").iterdir() if path.is_dir())
    assert len(entries) == 2  # one per (backbone, corpus)
    assert [len(list(entry.glob("*/*.npy"))) for entry in entries] == [clips, clips]
    fills = [json.loads(path.read_text()) for path in (out / "caches").glob("*.json")]
    assert sorted(fill["encoded"] for fill in fills) == [clips, clips]
    # The encoder ran once per clip: every fold of every cell found its clips cached.
    plan = json.loads((out / "sweep.json").read_text())
    for cell in plan["cells"]:
        for metrics in (out / cell["run"]).glob("folds/*/metrics.json"):
            assert json.loads(metrics.read_text())["cache_fill"]["clips"] == 0, metrics


@pytest.mark.slow
def test_rerunning_a_finished_sweep_trains_nothing(finished_sweep) -> None:
    spec, out, cache = finished_sweep
    logs = {path: path.read_text() for path in (out / "logs").iterdir()}
    states = {path: path.read_text() for path in (out / "state").iterdir()}
    metrics = {path: path.stat().st_mtime_ns for path in out.glob("runs/*/folds/*/metrics.json")}
    result = run_sweep(spec, out, cache, "--jobs", "2")
    assert result.returncode == 0, result.stderr
    assert "4 cell(s): 0 to run, 4 done" in result.stdout
    assert {path: path.read_text() for path in (out / "logs").iterdir()} == logs  # no task started
    assert {path: path.read_text() for path in (out / "state").iterdir()} == states
    assert {path: path.stat().st_mtime_ns for path in metrics} == metrics


@pytest.mark.slow
def test_a_sweep_killed_mid_cell_resumes_to_the_same_metrics(tmp_path: Path, finished_sweep, small_corpus: Path,
                                                            grid: dict) -> None:
    _, reference, _ = finished_sweep
    spec = write_spec(tmp_path / "grid.yaml", small_corpus, grid)
    out, cache = tmp_path / "sweep", tmp_path / "cache"
    process = subprocess.Popen(sweep_command(spec, out, "--jobs", "2"), start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "SERTUNE_CACHE": str(cache)})
    deadline = time.monotonic() + 600
    # Killed once a LoRA cell has finished an epoch but not the cell: its training is mid-way.
    while time.monotonic() < deadline and process.poll() is None:
        started = [path for path in out.glob("runs/*/folds/fold1/metrics.json")
                   if not (path.parents[2] / "summary.json").exists()
                   and yaml.safe_load((path.parents[2] / "config.yaml").read_text())["tuning"]["method"] == "lora"]
        if started:
            break
        time.sleep(0.2)
    assert process.poll() is None, "the sweep finished before it could be killed"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert len(list(out.glob("runs/*/summary.json"))) < 4
    result = run_sweep(spec, out, cache, "--jobs", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    assert all_metrics(out) == all_metrics(reference)


@pytest.mark.slow
def test_an_impossible_cell_fails_alone(cli, tmp_path: Path, small_corpus: Path, backbones: list[Path]) -> None:
    base = {**BASE, "folds": ["1"], "train": {**BASE["train"], "epochs": 1}}
    spec = write_spec(tmp_path / "grid.yaml", small_corpus,
                      {"backbone": [str(backbones[0])], "method": ["lora"], "layers": [[0], [40]]}, base=base)
    out = tmp_path / "sweep"
    status, printed, err = cli(["sweep", str(spec), "--out", str(out), "--jobs", "2"])
    assert status == 1 and "1 cell(s) failed" in err
    assert "1 done, 0 running, 0 pending, 1 failed" in printed
    status, printed, _ = cli(["sweep", "status", str(out), "--json"])
    rows = {row["name"].rsplit("/", 1)[1]: row for row in json.loads(printed)}
    assert rows["layers=40"]["state"] == "failed"
    assert "layer 40 does not exist: the encoder has 2 layers" in rows["layers=40"]["error"]
    assert rows["layers=0"]["state"] == "done" and rows["layers=0"]["test_uar"]["n"] == 1
    # --retry-failed runs it again (and it fails again, a second attempt); without it nothing runs.
    status, printed, _ = cli(["sweep", str(spec), "--out", str(out)])
    assert status == 0 and "0 to run, 1 done, 1 failed" in printed
    status, _, _ = cli(["sweep", str(spec), "--out", str(out), "--retry-failed"])
    failed = next(p for p in (out / "state").glob("*.json") if json.loads(p.read_text())["state"] == "failed")
    assert status == 1 and json.loads(failed.read_text())["attempt"] == 2


@pytest.mark.slow
def test_slurm_executor_on_a_real_cluster_equals_the_local_executor(
    tmp_path: Path, slurm_cluster: SlurmCluster, finished_sweep, small_corpus: Path, backbones: list[Path]
) -> None:
    _, reference, _ = finished_sweep
    spec = write_spec(tmp_path / "grid.yaml", small_corpus, {"backbone": [str(b) for b in backbones],
                                                             "method": ["frozen"]})
    out = tmp_path / "sweep"
    result = run_sweep(spec, out, tmp_path / "cache", *slurm_options(slurm_cluster))
    assert result.returncode == 0, result.stdout + result.stderr
    metrics = all_metrics(out)
    assert len(metrics) == 4  # 2 cells x 2 folds, the same cells (ids) as the local sweep's frozen ones
    assert metrics == {key: value for key, value in all_metrics(reference).items() if key in metrics}
    for state in (out / "state").glob("*.json"):
        record = json.loads(state.read_text())
        assert record["state"] == "done" and "_" in record["slurm_job"], record  # ran as a task of a job array
    assert sorted(path.name for path in (out / "slurm").iterdir())  # submitit's job files


def test_the_study_preset_is_the_five_backbones_by_five_methods_on_the_study_recipe(
    cli, tmp_path: Path, small_corpus: Path
) -> None:
    status, printed, _ = cli(["sweep", "--preset", "peft-ser", str(small_corpus), "--out", str(tmp_path / "s"),
                              "--dry-run"])
    assert status == 0 and "25 cell(s)" in printed
    plan = json.loads((tmp_path / "s/sweep.json").read_text())
    names = [cell["name"].split("/", 1)[1] for cell in plan["cells"]]
    assert names[:5] == ["whisper-tiny/frozen", "whisper-tiny/adapter-d128", "whisper-tiny/parallel-adapter-d128",
                         "whisper-tiny/prompt-p5", "whisper-tiny/lora-r16"]
    assert {cell["config"]["tuning"]["lora_alpha"] for cell in plan["cells"]} == {1.0}  # the paper preset
    assert {cell["config"]["head"]["normalization"] for cell in plan["cells"]} == {"none"}
    assert not (tmp_path / "s/runs").exists()
    status, _, err = cli(["sweep", "--preset", "peft-ser", "--out", str(tmp_path / "t")])
    assert status == 2 and "needs the prepared corpus directories" in err


@pytest.mark.slow
def test_a_preempted_slurm_cell_is_requeued_and_resumes_to_the_same_metrics(
    tmp_path: Path, slurm_cluster: SlurmCluster, small_corpus: Path, backbones: list[Path]
) -> None:
    base = {**BASE, "train": {**TRAIN, "epochs": 6}}
    spec = write_spec(tmp_path / "grid.yaml", small_corpus, {"backbone": [str(backbones[0])], "method": ["lora"]},
                      base=base)
    out = tmp_path / "sweep"
    # 2 CPUs: the threads the local executor's one job gets, so that both sum in the same order
    sweep = subprocess.Popen([*sweep_command(spec, out), *slurm_options(slurm_cluster, cpus=2)], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True,
                             env={**os.environ, "SERTUNE_CACHE": str(tmp_path / "cache")})
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not list(out.glob("runs/*/folds/fold1/metrics.json")):
        time.sleep(0.1)
    cell = json.loads((out / "sweep.json").read_text())["cells"][0]["id"]
    job = json.loads((out / "state" / f"{cell}.json").read_text())["slurm_job"]
    # What SLURM does to a pre-empted job: a signal to its step; submitit then requeues the job.
    slurm_cluster.query("scancel", "--signal=USR2", job)
    printed, _ = sweep.communicate(timeout=600)
    assert sweep.returncode == 0, printed
    record = json.loads((out / "state" / f"{cell}.json").read_text())
    assert record["state"] == "done" and record["attempt"] == 2, record
    second = (out / "logs" / f"{cell}.log").read_text().split("=== attempt 2")[1]
    assert second.splitlines()[0].endswith("--resume")
    # The same metrics as the cell trained without interruption by the local executor.
    result = run_sweep(spec, tmp_path / "local", tmp_path / "cache")
    assert result.returncode == 0, result.stdout + result.stderr
    assert all_metrics(out) == all_metrics(tmp_path / "local") and len(all_metrics(out)) == 2


def test_status_shows_a_dimensional_cell_by_its_mean_ccc() -> None:
    from sertune.sweep.status import format_rows

    rows = [
        {"name": "synthetic/whisper-tiny.en/lora", "state": "done", "test_uar": {"mean": 61.25, "std": 2.5, "n": 2},
         "test_ccc": None, "seconds": 75.0, "error": None},
        {"name": "synthetic/whisper-tiny.en/lora/task=dimensional", "state": "done", "test_uar": None,
         "test_ccc": {"mean": 0.4312, "std": 0.05, "n": 2}, "seconds": 61.0, "error": None},
    ]
    text = format_rows(rows)
    assert "61.2 ± 2.5 (2 folds)" in text and "CCC 0.431 ± 0.050 (2 folds)" in text and "2 done" in text
