"""Pure parts of the SDK: kind names, objects from YAML, short forms, mount mapping, safe tar extraction, results
files, the status report, the CLI's parser, dry runs and completion."""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml
from gang_cluster import REPO

from interp_operator.api.common import StorageRef
from interp_operator.api.saetrainingjob import SAETrainingJobStatus
from interp_operator.sdk import InvalidObject, Mounts, NotMounted, cli, load_objects, resolve_kind, shortforms
from interp_operator.sdk.client import Client, Handle
from interp_operator.sdk.resources import body_of
from interp_operator.sdk.results import Results, safe_extract
from interp_operator.sdk.status import describe, failure


@pytest.mark.parametrize(("name", "kind"), [
    ("saejob", "SAETrainingJob"), ("SAETrainingJob", "SAETrainingJob"), ("saetrainingjobs", "SAETrainingJob"),
    ("actdump", "ActivationDump"), ("activationdumps.interp.dev", "ActivationDump"), ("iis", "InterpInferenceService"),
    ("InterpInferenceService", "InterpInferenceService"),
])
def test_kind_names(name, kind):
    assert resolve_kind(name).kind == kind


def test_unknown_kind_lists_the_choices():
    with pytest.raises(ValueError, match=r"unknown kind 'pod'.*saejob"):
        resolve_kind("pod")


def test_every_example_loads_and_round_trips():
    for path in sorted((REPO / "examples").glob("*.yaml")):
        raw = yaml.safe_load(path.read_text())
        [obj] = load_objects(path)
        assert obj.kind == raw["kind"]
        body = body_of(obj, "team-a")
        assert body["metadata"]["namespace"] == raw["metadata"].get("namespace", "team-a")
        # What is sent is what the file says (the API server adds the defaults).
        assert body["spec"] == raw["spec"], path


def test_invalid_objects_name_the_field():
    text = """
apiVersion: interp.dev/v1alpha1
kind: SAETrainingJob
metadata: {name: bad}
spec:
  model: {hubId: gpt2}
  data: {activationDump: {name: d}}
  saes: [{name: a, hookPoint: resid_post.0, architecture: topk, dictSize: 16, k: 32}]
  training: {tokens: 10}
  output: {claimName: data}
  gang: {replicaz: 2}
"""
    with pytest.raises(InvalidObject) as err:
        load_objects(text)
    message = str(err.value)
    assert "SAETrainingJob bad:" in message and "spec.gang.replicaz: Extra inputs are not permitted" in message
    with pytest.raises(InvalidObject, match="kind: expected one of"):
        load_objects("kind: Pod\nmetadata: {name: x}\n")
    with pytest.raises(InvalidObject, match="not valid YAML"):
        load_objects("a: [")
    with pytest.raises(InvalidObject, match="no objects"):
        load_objects("---\n")


def test_sae_short_form():
    assert shortforms.sae("topk:k=32:dict=16384", "resid_post.3") == {
        "architecture": "topk", "k": 32, "dictSize": 16384, "hookPoint": "resid_post.3",
        "name": "resid-post-3-topk-16384"}
    assert shortforms.sae("jumprelu:x=8:l0=0.5:hook=mlp_out.1:name=j") == {
        "architecture": "jumprelu", "expansionFactor": 8, "sparsityCoefficient": 0.5, "hookPoint": "mlp_out.1",
        "name": "j"}
    with pytest.raises(InvalidObject, match="not KEY=VALUE"):
        shortforms.sae("topk:kk=3", "h")
    with pytest.raises(InvalidObject, match="k must be a number"):
        shortforms.sae("topk:k=many", "h")
    with pytest.raises(InvalidObject, match="no hook point"):
        shortforms.sae("topk:k=3:dict=8")


def test_storage_and_model_short_forms():
    assert shortforms.storage("pvc://data/a/b/") == {"claimName": "data", "subPath": "a/b"}
    assert shortforms.storage("pvc://data", read_only=True) == {"claimName": "data", "readOnly": True}
    assert shortforms.storage("file:///shared/x") == {"uri": "file:///shared/x"}
    for uri in ("s3://bucket/x", "gs://bucket/x"):
        with pytest.raises(InvalidObject, match=r"s3:// and gs:// are not supported yet: use a PersistentVolumeClaim"):
            shortforms.storage(uri)
    assert shortforms.model("EleutherAI/pythia-70m") == {"hubId": "EleutherAI/pythia-70m"}
    assert shortforms.model("pvc://m/gpt2") == {"storage": {"claimName": "m", "subPath": "gpt2", "readOnly": True}}
    with pytest.raises(InvalidObject, match="storage is pvc://"):
        shortforms.storage("/abs/path")


def test_train_short_form_is_validated_by_the_models():
    job = shortforms.train("j", model_location="gpt2", saes=["topk:k=8:dict=64"], hook_point="resid_post.0",
                           activation_dump="d", output="pvc://data/out", tokens=8192, replicas=2, gpus=1)
    assert job.spec.gang.replicas == 2 and job.spec.data.activation_dump.name == "d"
    with pytest.raises(InvalidObject, match=r"spec.saes\[0\]: k must be smaller than dictSize"):
        shortforms.train("j", model_location="gpt2", saes=["topk:k=80:dict=64"], hook_point="h",
                         activation_dump="d", output="pvc://data/out", tokens=8192)
    with pytest.raises(InvalidObject, match="exactly one of --dump"):
        shortforms.train("j", model_location="gpt2", saes=["relu:dict=4:l1=1"], hook_point="h",
                         output="pvc://data/out", tokens=8192)
    service = shortforms.serve("s", model_location="pvc://m/gpt2", no_auth=True,
                               saes=["l3=resid_post.3@pvc://data/saes/l3"])
    assert service.spec.saes[0].storage.sub_path == "saes/l3" and service.spec.auth.disabled


def test_mounts_map_claims_to_local_paths(tmp_path):
    mounts = Mounts.parse(f"data=/mnt/data, team-a/data=/mnt/a, *={tmp_path}/{{namespace}}/{{claim}}")
    assert mounts.resolve(StorageRef(claim_name="data", sub_path="x/y"), "ns") == Path("/mnt/data/x/y")
    assert mounts.resolve(StorageRef(claim_name="data"), "team-a") == Path("/mnt/a")
    assert mounts.resolve(StorageRef(claim_name="other"), "ns") == tmp_path / "ns" / "other"
    assert mounts.resolve(StorageRef(uri="file:///srv/x"), "ns") == Path("/srv/x")
    with pytest.raises(NotMounted, match=r"PVC ns/data is not mounted here.*results.pull"):
        Mounts.parse("").resolve(StorageRef(claim_name="data"), "ns")
    with pytest.raises(NotMounted, match="object storage"):
        # The models refuse s3:// now; an object stored under an older CRD can still carry one.
        mounts.resolve(StorageRef.model_construct(uri="s3://b/k"), "ns")
    with pytest.raises(ValueError, match="expected CLAIM=PATH"):
        Mounts.parse("data")


def _tar(entries: dict[str, bytes], links: dict[str, str] | None = None) -> tarfile.TarFile:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            archive.addfile(info)
    buffer.seek(0)
    return tarfile.open(fileobj=buffer, mode="r:")


def test_safe_extract_keeps_files_inside_the_destination(tmp_path):
    names = safe_extract(_tar({"./a/manifest.json": b"{}", "./b.bin": b"xyz"}), tmp_path / "out")
    assert sorted(names) == ["a/manifest.json", "b.bin"]
    assert (tmp_path / "out" / "b.bin").read_bytes() == b"xyz"
    with pytest.raises(ValueError, match="outside the destination"):
        safe_extract(_tar({"../escape": b"x"}), tmp_path / "out2")
    assert not (tmp_path / "escape").exists()
    with pytest.raises(ValueError, match="neither a file nor a directory"):
        safe_extract(_tar({}, links={"link": "/etc/passwd"}), tmp_path / "out3")


class _Offline:
    namespace = "ns"
    api_client = None


def _handle(kind: str, spec: dict) -> Handle:
    client = Client(transport=_Offline(), mounts={})
    return client._handle({"apiVersion": "interp.dev/v1alpha1", "kind": kind,
                           "metadata": {"name": "j", "namespace": "ns"}, "spec": spec})


def test_results_files_from_a_mounted_output(tmp_path):
    out = tmp_path / "ns" / "data" / "runs" / "j"
    (out / "profiles").mkdir(parents=True)
    (out / "profiles" / "profile-rank0-steps-1-2.json").write_text("{}")
    # The trainer's log: one record per SAE per interval.
    records = [{"step": 10, "tokens": 100, "sae": "a", "fvu": 0.5, "l0": 30},
               {"step": 10, "tokens": 100, "sae": "b", "fvu": 0.9},
               {"step": 20, "tokens": 200, "sae": "a", "fvu": 0.25, "l0": 31}]
    (out / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    handle = _handle("SAETrainingJob", {"output": {"claimName": "data", "subPath": "runs/j"},
                                        "saes": [{"name": "a"}, {"name": "b"}]})
    results = Results(handle, Mounts({"*": f"{tmp_path}/{{namespace}}/{{claim}}"}))
    assert results.local_path() == out
    curves = results.training_curves()
    assert curves == {"a": {"step": [10, 20], "tokens": [100, 200], "fvu": [0.5, 0.25], "l0": [30, 31]},
                      "b": {"step": [10], "tokens": [100], "fvu": [0.9]}}
    assert [p.name for p in results.profiles()] == ["profile-rank0-steps-1-2.json"]
    assert results.sae_path("a") == out / "a"
    with pytest.raises(KeyError, match="no SAE 'c'"):
        results.sae_path("c")
    copied = results.pull(tmp_path / "copy")
    assert sorted(copied) == ["metrics.jsonl", "profiles/profile-rank0-steps-1-2.json"]
    assert (tmp_path / "copy" / "metrics.jsonl").read_text() == (out / "metrics.jsonl").read_text()


def test_status_report_of_a_training_job():
    status = SAETrainingJobStatus.model_validate({
        "phase": "Failed", "worldSize": 4, "restarts": 2, "attempt": 3,
        "progress": {"tokensDone": 500, "tokensTotal": 1000, "percent": 50.0, "tokensPerSecond": 12345.0},
        "lastCheckpoint": {"step": 7, "tokens": 450, "path": "pvc://data/ckpt/7"},
        "saes": [{"name": "l3", "step": 7, "l0": 31.5, "fvu": 0.125, "deadFraction": 0.02}],
        "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "3 restarts"}],
    })
    report = describe("SAETrainingJob", "j", status)
    assert "SAETrainingJob j: Failed" in report and "50.0%" in report and "12.3k tok/s" in report
    assert "step 7, 450 tokens at pvc://data/ckpt/7" in report
    row = next(line for line in report.splitlines() if line.strip().startswith("l3"))
    assert row.split() == ["l3", "7", "31.5", "0.125", "-", "-", "2.0%"]
    assert failure(status) == ("BackoffLimitExceeded", "3 restarts")
    assert "failure    BackoffLimitExceeded: 3 restarts" in report


def test_cli_dry_run_prints_the_object_without_a_cluster(capsys, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", "/nonexistent")
    code = cli.main(["-n", "team-a", "train", "t1", "--model", "gpt2", "--dump", "d1", "--sae", "topk:k=8:dict=64",
                     "--hook", "resid_post.0", "--output", "pvc://data/t1", "--tokens", "8192", "--dry-run",
                     "-o", "yaml"])
    assert code == 0
    body = yaml.safe_load(capsys.readouterr().out)
    assert body["metadata"] == {"name": "t1", "namespace": "team-a"}
    assert body["spec"]["saes"] == [{"name": "resid-post-0-topk-64", "hookPoint": "resid_post.0",
                                     "architecture": "topk", "dictSize": 64, "k": 8}]
    assert cli.main(["train", "t1", "--model", "gpt2", "--dump", "d1", "--sae", "topk:k=80:dict=64", "--hook", "h",
                     "--output", "pvc://data/t1", "--tokens", "8192", "--dry-run"]) == cli.EXIT_USAGE
    assert "k must be smaller than dictSize" in capsys.readouterr().err
    example = str(REPO / "examples" / "activationdump.yaml")
    assert cli.main(["submit", example, "--dry-run", "-o", "name"]) == 0
    assert capsys.readouterr().out.strip() == f"actdump/{yaml.safe_load(Path(example).read_text())['metadata']['name']}"


def test_cli_without_a_cluster_says_so(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    assert cli.main(["get"]) == cli.EXIT_FAILED
    assert "no kubeconfig at" in capsys.readouterr().err


def test_every_command_has_help(capsys):
    parser = cli.build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    assert {"submit", "train", "dump", "serve", "status", "get", "watch", "logs", "events", "delete", "suspend",
            "resume", "port-forward", "results", "profile", "completion"} <= set(commands)
    for name in commands:
        with pytest.raises(SystemExit) as done:
            parser.parse_args([name, "--help"])
        assert done.value.code == 0
        assert "usage: interpctl" in capsys.readouterr().out


def test_bash_completion_script_is_valid_and_completes_commands(tmp_path, capsys):
    assert cli.main(["completion", "bash"]) == 0
    script = tmp_path / "complete.bash"
    script.write_text(capsys.readouterr().out)
    probe = (f"source {script}; COMP_WORDS=(interpctl st); COMP_CWORD=1; _interpctl_complete; "
             f"echo ${{COMPREPLY[@]}}; COMP_WORDS=(interpctl logs --f); COMP_CWORD=2; _interpctl_complete; "
             f"echo ${{COMPREPLY[@]}}")
    out = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, check=True).stdout.splitlines()
    assert out[0].split() == ["status"] and out[1].split() == ["--follow"]
