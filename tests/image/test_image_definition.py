"""The image definition agrees with the chart and the operator: its tag is the package version, its user is the
chart's numeric non-root uid, and its source copy lets through what the package build needs. (Building it is
`make image-test`.)"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

import interp_operator
from interp_operator.gang import builders

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = (REPO / "image" / "Dockerfile").read_text()
VALUES = yaml.safe_load((REPO / "charts" / "interp-operator" / "values.yaml").read_text())


def make(*args: str) -> str:
    result = subprocess.run(["make", "--no-print-directory", *args], cwd=REPO, capture_output=True, text=True,
                            check=True)
    return result.stdout


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_image_tags_the_package_version_under_the_chart_repository():
    command = make("-n", "image")
    tag = re.search(r"-t '([^']+)'", command)
    assert tag, command
    assert tag.group(1) == f"{VALUES['image']['repository']}:{interp_operator.__version__}"
    assert tag.group(1) == builders.DEFAULT_IMAGE
    assert f"--build-arg VERSION='{interp_operator.__version__}'" in command
    assert "buildah bud --isolation chroot" in command
    custom = make("-n", "image", "BASE_IMAGE=localhost/base:1", "IMAGE=registry.example/x:y")
    assert "--build-arg BASE='localhost/base:1'" in custom and "-t 'registry.example/x:y'" in custom


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_image_targets_are_listed_by_help():
    listed = make("help")
    assert re.search(r"^\s+image\s+\S", listed, re.M) and re.search(r"^\s+image-test\s+\S", listed, re.M)


def test_user_is_the_charts_numeric_non_root_uid():
    users = re.findall(r"^USER\s+(\S+)\s*$", DOCKERFILE, re.M)
    assert len(users) == 1
    uid, _, gid = users[0].partition(":")
    assert uid.isdigit() and int(uid) != 0 and gid.isdigit() and int(gid) != 0
    assert int(uid) == VALUES["securityContext"]["runAsUser"] == VALUES["podSecurityContext"]["runAsUser"]
    assert int(gid) == VALUES["podSecurityContext"]["runAsGroup"]
    assert int(uid) == builders.RUN_AS_USER


def test_the_user_has_a_passwd_and_group_entry():
    """getpass.getuser() (kopf's identity outside a pod, torch's cache paths) raises for a uid without one."""
    uid, _, gid = re.findall(r"^USER\s+(\S+)\s*$", DOCKERFILE, re.M)[0].partition(":")
    assert re.search(rf"'\S+:x:{uid}:{gid}:[^:\n]*:/tmp:\S+' >> /etc/passwd", DOCKERFILE)
    assert re.search(rf"\S+:x:{gid}:' >> /etc/group", DOCKERFILE)


def test_base_and_torch_are_build_arguments_with_cpu_defaults():
    assert re.search(r"^ARG BASE=python:3\.\d+-slim-bookworm$", DOCKERFILE, re.M)
    assert re.search(r"^FROM \$\{BASE\}$", DOCKERFILE, re.M)
    assert "ARG TORCH_PIN=torch==2.13.0\n" in DOCKERFILE
    assert "ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu\n" in DOCKERFILE
    # torch before the project's dependencies, the dependencies before the source
    assert DOCKERFILE.index("${TORCH_PIN}") < DOCKERFILE.index("COPY pyproject.toml") < DOCKERFILE.index("COPY . /src")


def test_the_ignore_file_lets_through_what_the_package_build_reads():
    allowed = {line[1:].rstrip("/") for line in (REPO / "image" / "Dockerfile.dockerignore").read_text().splitlines()
               if line.startswith("!")}
    needed = {"pyproject.toml", "README.md", "operator", "workloads"}
    assert needed <= allowed
    for name in needed:
        assert (REPO / name).exists(), name


OPERATOR_IN_IMAGE = (REPO / "tests" / "image" / "operator-in-image.sh").read_text()


def test_operator_in_image_expects_the_operators_default_workload_image():
    default = re.search(r"^WORKLOAD_IMAGE=\$\{WORKLOAD_IMAGE:-([^}]+)\}$", OPERATOR_IN_IMAGE, re.M)
    assert default, "operator-in-image.sh no longer defaults WORKLOAD_IMAGE"
    assert default.group(1).replace("$VERSION", interp_operator.__version__) == builders.DEFAULT_IMAGE


def test_operator_in_image_applies_a_valid_one_rank_dump_that_keeps_its_failed_pod():
    """The object the image tier applies passes the API's own model (the CRD is generated from it), fits a node
    without GPUs, and allows no restart, so its one pod stays for the check instead of being replaced."""
    from interp_operator.api.activationdump import ActivationDumpSpec

    manifest = re.search(r"<<EOF\n(.*?)\nEOF\n", OPERATOR_IN_IMAGE, re.S)
    assert manifest, "operator-in-image.sh no longer applies a manifest from a here-document"
    text = manifest.group(1).replace("$NAMESPACE", "image-test").replace("$OBJECT", "image-test-dump")
    dump = next(doc for doc in yaml.safe_load_all(text) if doc["kind"] == "ActivationDump")
    spec = ActivationDumpSpec.model_validate(dump["spec"])
    assert spec.parallelism == 1
    assert "nvidia.com/gpu" not in yaml.safe_dump(dump["spec"]["worker"])
    assert spec.restart_policy.backoff_limit == 0
