"""evaluate: runs created as the run form creates them, queued for workers, followed to
their scores (a real Celery worker, or the steps done in-process), and every bad option
refused before anything is stored."""

from __future__ import annotations

import numpy as np
import pytest
from kombu.exceptions import OperationalError as KombuOperationalError
from sklearn.model_selection import LeaveOneOut, cross_val_predict
from sklearn.neighbors import KNeighborsClassifier

from evaluation import services
from evaluation.metrics import knn_entry, pair_alignment_entry, probe_entry
from evaluation.models import PretrainedModel, Run, RunStep, Score
from tests.cli.conftest import cli, cli_fails
from tests.conftest import make_image_dataset, make_text_dataset, make_timm_model
from workers.celery import app as celery_app


@pytest.fixture
def digits(digits_zip_small):
    return make_image_dataset(data=digits_zip_small)


@pytest.mark.django_db
def test_queued_run_has_the_form_s_metrics_layers_and_one_message_per_step(
    digits, enqueued, django_capture_on_commit_callbacks
):
    vit = make_timm_model("tiny-vit", "test_vit")
    resnet = make_timm_model("tiny-resnet", "test_resnet")
    with django_capture_on_commit_callbacks(execute=True):
        document = cli(
            "evaluate",
            "--dataset",
            "digits-120",
            "--model",
            "tiny-*",
            "--metric",
            "knn(k=3,split=holdout)",
            "few_shot:k_shot=5",
            "linear_probe",
            "--layers",
            "tiny-vit=blocks.0,blocks.1",
            "--json",
        ).document
    run = Run.objects.get()
    assert run.metrics == [
        knn_entry(k=3, split="holdout"),
        probe_entry("few_shot", n_way=5, k_shot=5),
        probe_entry("linear_probe"),
    ]
    steps = {step.model.name: step for step in run.steps.all()}
    assert (
        steps["tiny-vit"].layers == ["blocks.0", "blocks.1"] and steps["tiny-resnet"].layers == []
    )
    assert document["run"]["id"] == run.pk and document["run"]["status"] == "queued"
    assert document["run"]["path"] == f"/runs/{run.pk}/"
    # A pattern takes the matching models in name order.
    assert [s["model"] for s in document["steps"]] == ["tiny-resnet", "tiny-vit"]
    assert document["steps"][0]["layers"] == [resnet.default_layer]
    assert sorted(enqueued) == sorted(
        ("evaluation.extract_embeddings", step.pk) for step in steps.values()
    )
    assert vit.pk in {s["model_id"] for s in document["steps"]}


@pytest.mark.django_db(transaction=True)  # the run's tasks are sent at its commit
def test_default_metrics_are_each_target_s_main_metric(tmp_path, enqueued):
    dataset = make_text_dataset(name="sentences")
    cli("register_model", "tfidf", "--source", "baseline")
    ratings = tmp_path / "ratings.csv"
    ratings.write_text('a,b,value\n"A cat sits on the mat.","Kittens play with yarn.",6\n')
    cli(
        "import_judgments",
        str(ratings),
        "--format",
        "pairs",
        "--name",
        "p",
        "--dataset",
        "sentences",
    )
    printed = cli("evaluate", "--dataset", str(dataset.pk), "--all-models")
    run = Run.objects.get()
    assert run.metrics == [knn_entry(k=5, split="loo"), pair_alignment_entry()]
    assert set(run.targets.values_list("kind", flat=True)) == {"labels", "pairs"}
    assert printed.stdout.splitlines() == [
        f"Run {run.pk} queued: 1 model(s) on sentences, knn(k=5,split=loo), "
        "pair_alignment(correlation=spearman).",
        f"Follow it with `manage.py evaluate --run {run.pk}` or at /runs/{run.pk}/.",
    ]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--metric", "knn(k=0)"), "knn(k=0): k must be between 1 and 1000."),
        (("--metric", "knn(q=1)"), "knn(q=1): knn takes k, split; 'q=1' is not one of them."),
        (("--metric", "knn(split=random)"), "split must be one of loo, holdout"),
        (("--metric", "few_shot(k_shot=two)"), "k_shot must be a whole number, not 'two'"),
        (("--metric", "accuracy"), "Unknown metric 'accuracy'; choose from knn,"),
        (("--metric", "pair_alignment"), "needs human pair ratings; digits-120 has none"),
        (("--layers", "tiny-vit=blocks.99"), "tiny-vit has no layer 'blocks.99'"),
        (("--layers", "minilm=0"), "minilm, which is not one of the run's models"),
        (("--layers", "tiny-vit"), "write MODEL=LAYER"),
        (("--model", "minilm"), "minilm embeds a different modality than the image stimuli"),
        (("--model", "nothing-*"), "No model name matches 'nothing-*' among the image models"),
        (
            ("--dataset", "digits-12"),
            "No dataset with id or name 'digits-12'. Did you mean: digits-120?",
        ),
        (("--run", "1"), "--run follows an existing run"),
        (("--timeout", "0"), "--timeout must be a positive number"),
    ],
)
def test_bad_options_are_refused_and_create_no_run(digits, args, message):
    from tests.conftest import make_text_model

    vit = make_timm_model("tiny-vit", "test_vit")
    PretrainedModel.objects.filter(pk=vit.pk).update(
        layers=[{"name": "pre_logits", "shape": [8]}, {"name": "blocks.0", "shape": [5, 8]}]
    )
    make_text_model("minilm")
    options = {"--dataset": "digits-120", "--model": "tiny-vit"}
    extra = list(args)
    for flag in ("--dataset", "--model"):
        if flag in extra:
            options[flag] = extra.pop(extra.index(flag) + 1)
            extra.remove(flag)
    base = [part for flag, value in options.items() for part in (flag, value)]
    error, printed = cli_fails("evaluate", *base, *extra, "--json")
    assert message in str(error) and "\n" not in str(error)
    assert printed.document == {"error": str(error)}
    assert not Run.objects.exists() and not RunStep.objects.exists()


@pytest.mark.django_db
def test_wait_gives_up_after_the_timeout_and_leaves_the_run_queued(digits, enqueued):
    make_timm_model("tiny-vit", "test_vit")
    error, printed = cli_fails(
        "evaluate", "--dataset", "digits-120", "--model", "tiny-vit", "--wait",
        "--timeout", "0.3", "--poll", "0.05",
    )  # fmt: skip
    run = Run.objects.get()
    assert error.returncode == 124
    assert str(error) == (
        f"Run {run.pk} has not finished after 0s (queued, 0%); it goes on: follow it with "
        f"`manage.py evaluate --run {run.pk}`."
    )
    assert run.status == "queued"
    assert f"run {run.pk} [" in printed.stderr and printed.stdout == ""


@pytest.mark.django_db(transaction=True)
def test_in_process_run_prints_scores_equal_to_sklearn(digits, enqueued):
    make_timm_model("tiny-vit", "test_vit")
    printed = cli(
        "evaluate", "--dataset", "digits-120", "--model", "tiny-vit", "--metric", "knn(k=3)",
        "--in-process", "--json", "--poll", "0.1",
    )  # fmt: skip
    document = printed.document
    score = Score.objects.get()
    assert document["run"]["status"] == "succeeded"
    assert document["scores"] == [
        {
            "model": "tiny-vit",
            "model_id": score.model_id,
            "layer": "pre_logits",
            "target": "digits-120: labels",
            "target_id": score.target_id,
            "metric": "knn(k=3,split=loo)",
            "value": score.value,
            "ci_low": score.ci_low,
            "ci_high": score.ci_high,
            "ceiling": None,
            "normalized": None,
            "n": 120,
        }
    ]
    embeddings = score.embedding_set.load().astype(np.float64)
    labels = np.array(list(digits.stimuli.order_by("order").values_list("label", flat=True)))
    reference = cross_val_predict(
        KNeighborsClassifier(n_neighbors=3, metric="cosine", algorithm="brute"),
        embeddings,
        labels,
        cv=LeaveOneOut(),
    )
    assert score.value == (reference == labels).mean()
    assert "100% | tiny-vit: succeeded" in printed.stderr.splitlines()[-1]

    # A second run on the same model and data reuses the cached embeddings.
    again = cli(
        "evaluate", "--dataset", "digits-120", "--model", "tiny-vit", "--metric", "knn(k=3)",
        "--in-process",
    )  # fmt: skip
    assert again.stdout.splitlines()[0].startswith("Run ") and "succeeded" in again.stdout
    assert f"{score.value:.4f}" in again.stdout and "[" in again.stdout
    assert RunStep.objects.filter(reused_embeddings=True).count() == 1


@pytest.mark.django_db(transaction=True)
def test_in_process_failure_prints_each_model_s_message_and_exits_1(digits, enqueued):
    make_timm_model("tiny-vit", "test_vit")
    error, printed = cli_fails(
        "evaluate", "--dataset", "digits-120", "--model", "tiny-vit",
        "--metric", "knn(k=500)", "--in-process",
    )  # fmt: skip
    run = Run.objects.get()
    step = run.steps.get()
    assert run.status == "failed" and error.returncode == 1
    assert step.error_message and "500" in step.error_message
    assert str(error) == f"Run {run.pk} failed. tiny-vit: {step.error_message.rstrip('.')}."
    assert f"FAILED tiny-vit (untrained baseline): {step.error_message}" in printed.stdout


@pytest.mark.django_db(transaction=True)
def test_a_run_with_some_models_failed_prints_their_scores_and_exits_3(enqueued):
    make_text_dataset()
    for name in ("tfidf-a", "tfidf-b"):
        services.model_register(name=name, source="baseline", identifier="tfidf")
    error, printed = cli_fails(
        "evaluate", "--dataset", "sentences", "--model", "tfidf-a", "tfidf-b",
        "--metric", "knn(k=1)", "--layers", "tfidf-b=no_such_layer", "--in-process",
    )  # fmt: skip
    run = Run.objects.get()
    failed = run.steps.get(model__name="tfidf-b")
    assert run.status == "partly_failed" and error.returncode == 3
    assert str(error) == (
        f"Run {run.pk} partly failed: 1 of 2 models failed. "
        f"tfidf-b: {failed.error_message.rstrip('.')}."
    )
    assert printed.stdout.startswith(f"Run {run.pk} partly failed: 1 of 2 models failed in ")
    assert Score.objects.get().model.name == "tfidf-a"
    assert "knn(k=1,split=loo)" in printed.stdout  # the scores that exist are printed


@pytest.mark.integration
def test_wait_follows_a_real_worker_to_the_scores(start_worker, digits_zip_small):
    worker = start_worker("cli@%h")
    make_image_dataset(data=digits_zip_small)
    make_timm_model("tiny-vit", "test_vit")
    printed = cli(
        "evaluate", "--dataset", "digits-120", "--model", "tiny-vit", "--wait",
        "--timeout", "150", "--poll", "0.2",
    )  # fmt: skip
    run = Run.objects.get()
    score = Score.objects.get(run=run)
    assert run.status == "succeeded", worker.log()
    lines = printed.stdout.splitlines()
    assert lines[0].startswith(f"Run {run.pk} succeeded in ")
    assert lines[1].split() == ["model", "layer", "target", "metric", "value", "95%", "CI",
                                "ceiling", "/ceiling", "n"]  # fmt: skip
    assert lines[3].split() == [
        "tiny-vit", "(untrained", "baseline)", "pre_logits", "digits-120:", "labels",
        "knn(k=5,split=loo)", f"{score.value:.4f}", f"[{score.ci_low:.3f},",
        f"{score.ci_high:.3f}]", "-", "-", "120",
    ]  # fmt: skip
    assert "100% | tiny-vit: succeeded" in printed.stderr

    # Following the finished run again (--run) prints the same scores as JSON.
    document = cli("evaluate", "--run", str(run.pk), "--json").document
    assert [s["value"] for s in document["scores"]] == [score.value]


@pytest.mark.django_db
def test_a_run_queued_while_the_broker_is_down_is_stored_once_and_said_so(
    monkeypatch, django_capture_on_commit_callbacks
):
    make_text_dataset()
    model = services.model_register(name="tfidf", source="baseline", identifier="tfidf")

    def unreachable(task_name, args, **options):
        raise KombuOperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(celery_app, "send_task", unreachable)
    with django_capture_on_commit_callbacks(execute=True):
        printed = cli("evaluate", "--dataset", "sentences", "--model", "tfidf")
    run = Run.objects.get()  # stored once: nothing for a retrying script to duplicate
    assert run.status == "queued" and run.steps.get().message_sent_at is None
    assert printed.stdout.splitlines() == [
        f"Run {run.pk} queued: 1 model(s) on sentences, knn(k=5,split=loo).",
        f"Follow it with `manage.py evaluate --run {run.pk}` or at /runs/{run.pk}/.",
        "The task queue (Celery broker) is unreachable: the run is stored and queued, and the "
        "workers send its tasks once the broker answers again (check CELERY_BROKER_URL, or "
        "start Redis). Do not create it again; --in-process needs no queue.",
    ]
    assert model.pk == run.steps.get().model_id
