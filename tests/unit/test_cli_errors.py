"""The `odh` command on bad input: one clear line on stderr and exit code 1, never a traceback.

These run the command in-process (typer's runner): every case here fails before any daemon is needed.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner, Result

from deployments.cli import app
from serving.manifests import MAX_MANIFEST_BYTES

# The classic "billion laughs": nine aliases per level, nine levels, a few hundred bytes expanding to 9^9 strings.
BILLION_LAUGHS = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{chr(ord('a') + i)}: &{chr(ord('a') + i)} [{', '.join(['*' + chr(ord('a') + i - 1)] * 9)}]\n" for i in range(1, 9)
)


def state_of(command: str, path: str) -> list[str]:
    """A state directory with no daemon for the commands that talk to one: the file is refused first."""
    return ["--state-dir", str(Path(path).parent / "state")] if command in ("apply", "delete") else []


def odh(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def assert_one_line_error(result: Result, *words: str) -> None:
    assert result.exit_code == 1, (result.exit_code, result.stdout, result.stderr)
    assert isinstance(result.exception, SystemExit), result.exception  # not an uncaught exception
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])


@pytest.fixture()
def manifest(tmp_path: Path):
    def write(text: str | bytes, name: str = "manifest.yaml") -> str:
        path = tmp_path / name
        path.write_bytes(text.encode() if isinstance(text, str) else text)
        return str(path)

    return write


@pytest.mark.parametrize("command", ["validate", "apply", "render", "delete"])
@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("just a string\n", ("is a string", "Kubernetes object")),
        ("42\n", ("is a number",)),
        ("- apiVersion: v1\n- kind: x\n", ("is a list", "mapping with apiVersion, kind")),
        ("", ("has no documents",)),
        ("---\n---\n", ("has no documents",)),
        ("kind: [unclosed\n", ("is not valid YAML", "line 2")),
        ("a: b: c\n", ("is not valid YAML", "line 1, column 5")),
        (b"\xff\xfe binary", ("not UTF-8",)),
        ("apiVersion: v1\n---\n- 1\n", ("document 2", "is a list")),
    ],
)
def test_a_manifest_that_is_not_objects_is_one_line_and_exit_1(manifest, command: str, text: str, words: tuple) -> None:
    path = manifest(text)
    assert_one_line_error(odh(command, "-f", path, *state_of(command, path)), path, *words)


@pytest.mark.parametrize("command", ["validate", "apply", "render", "delete"])
def test_a_missing_file_is_one_line_and_exit_1(tmp_path: Path, command: str) -> None:
    missing = tmp_path / "nope.yaml"
    assert_one_line_error(odh(command, "-f", str(missing), *state_of(command, str(missing))), str(missing), "does not exist")


@pytest.mark.parametrize("command", ["validate", "apply", "render", "delete"])
def test_a_yaml_alias_bomb_is_refused_without_expanding_it(manifest, command: str) -> None:
    path = manifest(BILLION_LAUGHS)
    started = time.monotonic()
    result = odh(command, "-f", path, *state_of(command, path))
    assert_one_line_error(result, "alias *a", "line 2", "write the value out")
    assert time.monotonic() - started < 10  # expanded, it would be 387 million strings


def test_a_manifest_over_the_size_limit_is_refused_before_it_is_parsed(manifest) -> None:
    path = manifest("a: " + "x" * MAX_MANIFEST_BYTES + "\n")
    assert_one_line_error(odh("validate", "-f", path), "over the limit", str(MAX_MANIFEST_BYTES))


def test_a_manifest_nested_too_deeply_is_refused(manifest) -> None:
    assert_one_line_error(odh("validate", "-f", manifest("a: " + "[" * 5000 + "]" * 5000 + "\n")), "nests deeper")
    assert_one_line_error(odh("validate", "-f", manifest("a: " + "[" * 80 + "]" * 80 + "\n")), "nests deeper than 64")


def test_anchors_without_aliases_and_plain_multi_document_files_still_work(manifest) -> None:
    isvc = {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService", "metadata": {"name": "iris"},
            "spec": {"predictor": {"sklearn": {"storageUri": "s3://b/m"}}}}
    text = "---\n" + yaml.safe_dump(isvc) + "---\n" + yaml.safe_dump({**isvc, "metadata": {"name": "two"}}) + "---\n"
    result = odh("validate", "-f", manifest(text.replace("kind: InferenceService", "kind: &k InferenceService", 1)))
    assert result.exit_code == 0, result.stderr
    assert "valid InferenceService iris" in result.stdout and "valid InferenceService two" in result.stdout


@pytest.mark.parametrize("spec", ["sk-1:bogus", "sk-1:Batchy:team"])
@pytest.mark.parametrize("form", ["separate", "equals"])
def test_an_unknown_api_key_tier_is_one_line_and_exit_1(spec: str, form: str) -> None:
    flag = ["--api-key", spec] if form == "separate" else [f"--api-key={spec}"]
    result = odh("llmd", "serve", "--port", "1", "--model", "m", "--engine", "http://127.0.0.1:1", *flag)
    assert_one_line_error(result, "--api-key", "unknown priority class", "interactive, streaming, batch")


def test_validate_refuses_kinds_users_cannot_apply_and_replicas_beyond_the_limit(manifest, monkeypatch) -> None:
    monkeypatch.setenv("ODH_MAX_REPLICAS", "4")
    docs = [{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}},
            {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService", "metadata": {"name": "big"},
             "spec": {"predictor": {"minReplicas": 500, "sklearn": {"storageUri": "s3://b/m"}}}}]
    result = odh("validate", "-f", manifest(yaml.safe_dump_all(docs)))
    assert result.exit_code == 1 and "Traceback" not in result.stderr
    assert "kind: 'Deployment' is not a kind you can apply; accepted kinds: InferenceService, LLMInferenceService, " \
           "ServingRuntime, ClusterServingRuntime" in result.stderr
    assert "spec.predictor.minReplicas: is 500, above this platform's limit of 4" in result.stderr


def test_field_names_with_brackets_are_printed_whole(manifest) -> None:
    doc = {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
           "metadata": {"name": "iris", "annotations": {"serving.kserve.io/deploymentMode": "Raw"}},
           "spec": {"predictor": {"sklearn": {"storageUri": "s3://b/m"}}}}
    result = odh("validate", "-f", manifest(yaml.safe_dump(doc)))
    assert "metadata.annotations[serving.kserve.io/deploymentMode]" in result.stderr  # not eaten as rich markup


@pytest.mark.parametrize(
    ("args", "words"),
    [(["delete"], ("give KIND NAME",)), (["delete", "InferenceService"], ("give KIND NAME",)),
     (["delete", "InferenceService", "iris", "-f", "x.yaml"], ("not both",))],
)
def test_delete_says_what_it_needs(args: list[str], words: tuple) -> None:
    assert_one_line_error(odh(*args), *words)


def test_delete_f_needs_kind_and_name_in_each_document(manifest) -> None:
    path = manifest(yaml.safe_dump_all([{"kind": "InferenceService", "metadata": {"name": "a"}}, {"kind": "X"}]))
    assert_one_line_error(odh("delete", "-f", path), "document 2 needs kind and metadata.name")


def test_the_router_module_run_directly_refuses_an_unknown_tier_in_one_line() -> None:
    """``python -m serving.llmd.serve`` (what the platform runs) checks keys before starting anything."""
    from serving.llmd.serve import main

    with pytest.raises(SystemExit) as exit_:
        main(["--port", "1", "--model", "m", "--engine", "http://127.0.0.1:1", "--api-key", "sk-1:bogus"])
    assert str(exit_.value.code).startswith("error: unknown priority class 'bogus'")


def test_render_of_a_serverless_manifest_prints_a_valid_knative_service(manifest) -> None:
    from schemas import assert_valid

    samples = Path(__file__).parents[1] / "fixtures" / "kserve" / "samples"
    sample = yaml.safe_load((samples / "v1beta1__sklearn__v1__sklearn.yaml").read_text())
    sample["metadata"]["annotations"] = {"serving.kserve.io/deploymentMode": "Serverless", "autoscaling.knative.dev/target": "1"}
    result = odh("render", "-f", manifest(yaml.safe_dump(sample)))
    assert result.exit_code == 0, result.stderr
    (ksvc,) = list(yaml.safe_load_all(result.stdout))
    assert (ksvc["apiVersion"], ksvc["kind"], ksvc["metadata"]["name"]) == ("serving.knative.dev/v1", "Service", "sklearn-iris-predictor")
    assert ksvc["spec"]["template"]["metadata"]["annotations"]["autoscaling.knative.dev/target"] == "1"
    assert_valid(ksvc, "knative_service.yaml", "v1")
