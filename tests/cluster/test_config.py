"""The cluster files hold up without a cluster (fast; the default suite).

- The cluster-launcher YAMLs validate against ``ray/autoscaler/ray-schema.json`` shipped in the
  installed Ray wheel, as written and after Ray fills in its defaults (what ``ray up`` validates).
- The KubeRay manifests are checked structurally: kind, apiVersion, image, entrypoint (parsed by the
  sweep's own argument parser), resources, the shared volume, token authentication.
- The Dockerfile pins the installed Ray, Python 3.11 and the installed torch; the images named in the
  launcher YAMLs and manifests carry the same versions.
- ``cluster/submit.sh`` passes ``bash -n`` and builds the documented ``ray job submit`` command
  (checked with a stand-in ``ray`` that prints its arguments).
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import re
import shlex
import stat
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[2]
CLUSTER = REPO / "cluster"
LAUNCHER_YAMLS = ("aws.yaml", "local.yaml")
MANIFESTS = ("kuberay/rayjob.yaml", "kuberay/raycluster.yaml")

PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
_PINS = dict(re.findall(r"(?m)^ARG (RAY_VERSION|TORCH_VERSION)=(\S+)$",
                        (REPO / "cluster" / "Dockerfile").read_text()))
RAY_VERSION, TORCH_VERSION = _PINS["RAY_VERSION"], _PINS["TORCH_VERSION"]
"""The image's pins (declared once, in the Dockerfile); every launch file must name the same Ray, and
both must satisfy pyproject.toml's ranges. Never compared with whatever happens to be installed."""
IMAGE = re.compile(
    rf"^registry\.example\.com/warmup-sweep:{re.escape(PROJECT['version'])}"
    rf"-ray{re.escape(RAY_VERSION)}-py311-(?P<variant>cpu|gpu)$")
"""The project image (cluster/Dockerfile) as every cluster file names it: project version, Ray
version, Python tag and variant in the tag, never ``latest``."""


def load_yaml(name: str) -> Any:
    return yaml.safe_load((CLUSTER / name).read_text())


def ray_schema() -> dict[str, Any]:
    spec = importlib.util.find_spec("ray")
    assert spec is not None and spec.origin is not None
    path = Path(spec.origin).parent / "autoscaler" / "ray-schema.json"
    return json.loads(path.read_text())


# ------------------------------------------------------------------------- cluster launcher YAMLs
@pytest.mark.parametrize("name", LAUNCHER_YAMLS)
def test_launcher_yaml_validates_against_rays_schema(name: str) -> None:
    schema = ray_schema()
    validator = jsonschema.Draft7Validator(schema)
    errors = [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
              for e in validator.iter_errors(load_yaml(name))]
    assert not errors, f"cluster/{name} does not match ray-schema.json:\n" + "\n".join(errors)


@pytest.mark.parametrize("name", LAUNCHER_YAMLS)
def test_launcher_yaml_validates_after_rays_defaults(name: str) -> None:
    # What `ray up` runs before it touches a machine: merge the provider's defaults.yaml, then
    # validate again (private Ray functions; re-check when the Ray pin moves).
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(load_yaml(name)))
    validate_config(prepared)
    assert prepared["head_node_type"] in prepared["available_node_types"]


def test_aws_has_a_cpu_head_and_gpu_workers() -> None:
    config = load_yaml("aws.yaml")
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    workers = {k: v for k, v in types.items() if k != config["head_node_type"]}
    gpu_family = re.compile(r"^(g|p)\d")  # EC2 GPU instance families: g4dn, g5, g6, p4d, p5 ...
    assert not gpu_family.match(head["node_config"]["InstanceType"])
    assert head["resources"] == {"CPU": 0}, "trials must not land on the head"
    assert workers and all(gpu_family.match(w["node_config"]["InstanceType"])
                           for w in workers.values())
    assert all(w["max_workers"] >= 1 for w in workers.values())
    head_start = " ".join(config["head_start_ray_commands"])
    assert "--num-cpus=0" in head_start


@pytest.mark.parametrize("name", LAUNCHER_YAMLS)
def test_launcher_yaml_runs_the_project_image_with_token_auth(name: str) -> None:
    config = load_yaml(name)
    images = [v for k, v in config["docker"].items() if k.endswith("image")]
    assert images
    for image in images:
        assert IMAGE.match(image), f"cluster/{name}: {image} is not the project image"
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = [c for c in config[key] if "ray start" in c]
        assert start and all("RAY_AUTH_MODE=token" in c for c in start), key
    assert "~/.ray/auth_token" in config["file_mounts"]


# ------------------------------------------------------------------------- KubeRay manifests
def cluster_spec(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["spec"]["rayClusterSpec"] if doc["kind"] == "RayJob" else doc["spec"]


def pod_specs(spec: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    pods = [("head", spec["headGroupSpec"]["template"]["spec"])]
    pods += [(g["groupName"], g["template"]["spec"]) for g in spec["workerGroupSpecs"]]
    return pods


@pytest.mark.parametrize("name", MANIFESTS)
def test_kuberay_manifest_structure(name: str) -> None:
    doc = load_yaml(name)
    assert doc["apiVersion"] == "ray.io/v1"
    assert doc["kind"] == {"kuberay/rayjob.yaml": "RayJob",
                           "kuberay/raycluster.yaml": "RayCluster"}[name]
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", doc["metadata"]["name"])
    spec = cluster_spec(doc)
    assert spec["rayVersion"] == RAY_VERSION
    assert spec["authOptions"] == {"mode": "token"}
    head_params = spec["headGroupSpec"]["rayStartParams"]
    assert head_params.get("num-cpus") == "0", "the head runs the driver, not trials"
    for group in [spec["headGroupSpec"], *spec["workerGroupSpecs"]]:
        # KubeRay passes these to `ray start` as strings; YAML numbers are rejected by the CRD.
        assert all(isinstance(v, str) for v in group["rayStartParams"].values())
    for group in spec["workerGroupSpecs"]:
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]

    for pod_name, pod in pod_specs(spec):
        mounted = {v["name"]: v for v in pod["volumes"]}
        assert mounted["shared"]["persistentVolumeClaim"]["claimName"] == "warmup-sweep-shared"
        for container in pod["containers"]:
            where = f"{name} {pod_name}/{container['name']}"
            match = IMAGE.match(container["image"])
            assert match, f"{where}: {container['image']} is not the project image"
            res = container["resources"]
            for part in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(res[part]), f"{where}: {part} needs cpu, memory"
            assert res["requests"] == res["limits"], f"{where}: requests != limits"
            gpus = int(res["limits"].get("nvidia.com/gpu", 0))
            assert (match["variant"] == "gpu") == (gpus > 0), f"{where}: GPU image iff GPUs"
            assert {m["mountPath"] for m in container["volumeMounts"]} >= {"/mnt/shared"}
    assert any(int(p["containers"][0]["resources"]["limits"].get("nvidia.com/gpu", 0)) > 0
               for _, p in pod_specs(spec)), "no GPU worker group"


def test_rayjob_entrypoint_is_a_sweep_command_the_sweep_accepts() -> None:
    from pipeline.sweep import build_parser

    doc = load_yaml("kuberay/rayjob.yaml")
    argv = shlex.split(doc["spec"]["entrypoint"])
    assert argv[:3] == ["python", "-m", "pipeline.sweep"]
    args = build_parser().parse_args(argv[3:])  # raises on a flag the sweep does not have
    assert args.space == "copy_task"
    assert "--address" not in argv, "a RayJob sets RAY_ADDRESS for its entrypoint"
    # Tune state and results on the volume every pod mounts (multi-node needs shared storage).
    assert args.storage.startswith("/mnt/shared/") and args.results.startswith("/mnt/shared/")
    assert 0 < args.gpus_per_trial <= 1
    assert doc["spec"]["shutdownAfterJobFinishes"] is True


def test_shared_volume_claim_is_read_write_many() -> None:
    doc = load_yaml("kuberay/shared-pvc.yaml")
    assert (doc["apiVersion"], doc["kind"]) == ("v1", "PersistentVolumeClaim")
    assert doc["metadata"]["name"] == "warmup-sweep-shared"
    assert doc["spec"]["accessModes"] == ["ReadWriteMany"]


# ------------------------------------------------------------------------- Dockerfile
def dockerfile_args() -> dict[str, str]:
    text = (CLUSTER / "Dockerfile").read_text()
    return dict(re.findall(r"(?m)^ARG (\w+)=(\S*)$", text))


def test_dockerfile_pins_ray_python_and_torch_within_the_declared_ranges() -> None:
    text = (CLUSTER / "Dockerfile").read_text()
    args = dockerfile_args()
    froms = re.findall(r"(?m)^FROM\s+(\S+)", text)
    assert froms == ["rayproject/ray:${RAY_VERSION}-${PYTHON_TAG}-${VARIANT}"]
    assert args["RAY_VERSION"] == RAY_VERSION
    assert args["PYTHON_TAG"] == "py311"
    assert args["VARIANT"] in ("gpu", "cpu")
    # The pins satisfy the project's own requirements, and the image re-pins them exactly.
    reqs = {Requirement(r).name: Requirement(r) for r in PROJECT["dependencies"]}
    assert reqs["ray"].specifier.contains(args["RAY_VERSION"])
    assert reqs["torch"].specifier.contains(args["TORCH_VERSION"])
    assert '"ray[tune,default]==${RAY_VERSION}"' in text
    assert '"torch==${TORCH_VERSION}"' in text
    assert "pip install --no-cache-dir ." in text
    assert "sys.version_info[:2] == (3, 11)" in text


def test_dockerignore_keeps_the_package_sources() -> None:
    lines = (CLUSTER / "Dockerfile.dockerignore").read_text().split()
    assert lines[lines.index("*"):] and {"!pyproject.toml", "!README.md", "!pipeline/",
                                         "!search_spaces/"} <= set(lines)


# ------------------------------------------------------------------------- job submission
def test_runtime_env_is_valid_and_leaves_out_local_state(monkeypatch: pytest.MonkeyPatch) -> None:
    from ray.runtime_env import RuntimeEnv

    env = load_yaml("runtime_env.yaml")
    monkeypatch.chdir(REPO)  # working_dir is the repository root, as submit.sh runs it
    RuntimeEnv(**env)  # Ray's own validation of every field
    assert env["working_dir"] == "."
    assert {".git", ".venv", "results"} <= set(env["excludes"])
    # No per-job installs: the nodes (image or VM) already have the pinned environment.
    assert not {"pip", "uv", "conda", "container", "image_uri"} & set(env)


SUBMIT = CLUSTER / "submit.sh"


def run_submit(*args: str, tmp_path: Path, ray: str | None = None,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items()
            if k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")}
    full.update(env or {})
    if ray is not None:
        full["RAY"] = ray
    return subprocess.run(["bash", str(SUBMIT), *args], cwd=tmp_path, env=full,
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def fake_ray(tmp_path: Path) -> Path:
    """A stand-in ``ray`` CLI that prints its working directory and arguments as JSON."""
    path = tmp_path / "fake-ray"
    path.write_text(f"#!{sys.executable}\nimport json, os, sys\n"
                    "print(json.dumps({'cwd': os.getcwd(), 'argv': sys.argv[1:]}))\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_submit_script_passes_bash_n() -> None:
    result = subprocess.run(["bash", "-n", str(SUBMIT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    text = SUBMIT.read_text()
    assert text.startswith("#!/usr/bin/env bash\n") and "set -euo pipefail" in text
    assert os.access(SUBMIT, os.X_OK)


def test_submit_script_builds_the_documented_command(tmp_path: Path, fake_ray: Path) -> None:
    result = run_submit("--address", "http://127.0.0.1:8265", "--submission-id", "s1", "--",
                        "--space", "copy_task", "--smoke", "--set", "model.cell=gru",
                        tmp_path=tmp_path, ray=str(fake_ray))
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen["cwd"] == str(REPO), "submit.sh must run from the repository root"
    sha = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True,
                         text=True).stdout.strip()
    env = seen["argv"][11:13]
    assert env[0] == "env" and env[1].startswith(f"WARMUP_SWEEP_GIT_SHA={sha}")  # the commit
    assert seen["argv"][:11] + seen["argv"][13:] == [
        "job", "submit", "--address", "http://127.0.0.1:8265", "--submission-id", "s1",
        "--runtime-env", "cluster/runtime_env.yaml", "--working-dir", ".", "--", "python", "-m",
        "pipeline.sweep", "--space", "copy_task", "--smoke", "--set", "model.cell=gru"]


def test_submit_script_address_defaults_to_the_environment(tmp_path: Path, fake_ray: Path
                                                           ) -> None:
    result = run_submit("--space", "copy_task", tmp_path=tmp_path, ray=str(fake_ray),
                        env={"RAY_ADDRESS": "http://10.0.0.1:8265"})
    argv = json.loads(result.stdout)["argv"]
    assert argv[argv.index("--address") + 1] == "http://10.0.0.1:8265"
    assert argv[-3:] == ["pipeline.sweep", "--space", "copy_task"]
    result = run_submit("--space", "copy_task", tmp_path=tmp_path, ray=str(fake_ray))
    argv = json.loads(result.stdout)["argv"]
    assert argv[argv.index("--address") + 1] == "http://127.0.0.1:8265"


def test_submit_script_usage_and_errors(tmp_path: Path, fake_ray: Path) -> None:
    helped = run_submit("--help", tmp_path=tmp_path, ray=str(fake_ray))
    assert helped.returncode == 0 and helped.stdout.startswith("usage: cluster/submit.sh")
    bare = run_submit(tmp_path=tmp_path, ray=str(fake_ray))
    assert bare.returncode == 2 and bare.stderr.startswith("usage: cluster/submit.sh")
    assert bare.stdout == ""
    no_ray = run_submit("--space", "copy_task", tmp_path=tmp_path, ray=str(tmp_path / "nope"))
    assert no_ray.returncode == 2 and "ray[default]" in no_ray.stderr
    dangling = run_submit("--address", tmp_path=tmp_path, ray=str(fake_ray))
    assert dangling.returncode == 2 and "--address needs a URL" in dangling.stderr


# ------------------------------------------------------------------------- README
def test_readme_covers_the_path_and_marks_gpu_throughput_unmeasured() -> None:
    text = (CLUSTER / "README.md").read_text()
    for needle in ("ray up cluster/aws.yaml", "cluster/kuberay/rayjob.yaml",
                   "cluster/kuberay/raycluster.yaml", "s3://", "gs://", "NFS", "RAY_AUTH_MODE",
                   "ray get-auth-token", "cluster/submit.sh"):
        assert needle in text, needle
    # Measured on a GPU machine (a table naming the card), or plainly marked as not measured.
    section = text.split("## GPU packing throughput", 1)[1].split("\n## ", 1)[0]
    assert "not been measured" in section or "|" in section
    images = set(re.findall(r"registry\.example\.com/warmup-sweep:\S+?(?=[\s`])", text))
    assert images and all(IMAGE.match(i) for i in images), images


@pytest.mark.parametrize("name", ["aws.yaml", "local.yaml"])
def test_ray_up_configs_bind_the_dashboard_to_loopback(name: str) -> None:
    """The workflow is an SSH tunnel (`ray dashboard`): the Jobs API never listens on a network."""
    text = (REPO / "cluster" / name).read_text()
    assert "--dashboard-host=127.0.0.1" in text and "0.0.0.0" not in text
