"""The shipped cluster files: launcher YAMLs validate against Ray's own schema, KubeRay manifests carry the
fields their kinds require and reference only what is defined, and every raysft command in them is one
raysft accepts, on a spec `raysft config show` accepts."""

import copy
import json
import re
import shlex
from importlib.metadata import version
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from raysft.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
CLUSTERS = ROOT / "clusters"
LAUNCHERS = sorted((CLUSTERS / "aws").glob("*.yaml")) + sorted((CLUSTERS / "gcp").glob("*.yaml"))
MANIFESTS = sorted((CLUSTERS / "kuberay").glob("*.yaml"))
SHIPPED = sorted(CLUSTERS.rglob("*.yaml")) + [CLUSTERS / "Dockerfile"]
RAY_SCHEMA = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
RAYSFT_VERSION = version("raysft")


def _name(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _header(path: Path) -> list[str]:
    lines = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("# ").strip())
    return lines


def _subcommands() -> set[str]:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return set(sub.choices)


def _check_raysft_argv(argv: list[str], working_dir: Path, capsys) -> None:
    """argv after `raysft`: parses with raysft's own parser; a train spec passes `raysft config show`."""
    if argv[0] not in _subcommands():
        assert argv[0] in ("serve", "tune"), f"raysft has no subcommand {argv[0]!r}"
        return  # planned subcommand not merged yet: only `train` can be checked today
    args = build_parser().parse_args(argv)
    if argv[0] == "train":
        spec = working_dir / args.spec
        assert spec.is_file(), f"{args.spec} not found in {working_dir}"
        assert main(["config", "show", str(spec), *args.overrides]) == 0, capsys.readouterr().err
        capsys.readouterr()


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


ALL_DOCS = [(path, doc) for path in MANIFESTS for doc in _docs(path)]


# --------------------------------------------------------------------------------------- every file


def test_clusters_ship_launchers_manifests_specs_and_an_image():
    assert {p.parent.name for p in LAUNCHERS} == {"aws", "gcp"}
    kinds = {doc["kind"] for _, doc in ALL_DOCS}
    assert {"RayCluster", "RayJob", "Deployment", "Service", "Secret", "ConfigMap"} <= kinds
    assert sorted((CLUSTERS / "specs").glob("*.spec.yaml"))
    assert (CLUSTERS / "Dockerfile").is_file() and (CLUSTERS / "README.md").is_file()


@pytest.mark.parametrize("path", SHIPPED, ids=_name)
def test_every_file_starts_with_the_command_that_uses_it(path):
    first = path.read_text().splitlines()[0]
    assert first.startswith("# "), f"{_name(path)} must start with a `# command` line"
    assert re.search(r"\b(ray up|ray job submit|kubectl (apply|create)|docker build)\b|\| kubectl create", first), first
    if path.suffix == ".yaml" and "raysft train" not in first:
        assert _name(path) in first, f"{_name(path)}: the command should name the file itself"


@pytest.mark.parametrize("path", SHIPPED, ids=_name)
def test_every_raysft_command_in_a_header_is_accepted(path, capsys):
    for line in _header(path):
        if "-- raysft " not in line:
            continue
        words = shlex.split(line)
        working_dir = ROOT / words[words.index("--working-dir") + 1] if "--working-dir" in words else path.parent
        _check_raysft_argv(words[words.index("--") + 2:], working_dir, capsys)


# ------------------------------------------------------------------------------- cluster launcher


@pytest.mark.parametrize("path", LAUNCHERS, ids=_name)
def test_launcher_validates_against_rays_schema(path):
    raw = yaml.safe_load(path.read_text())
    jsonschema.validate(raw, RAY_SCHEMA)
    # What `ray up` does before contacting the cloud: merge the provider defaults, check node types.
    validate_config(prepare_config(copy.deepcopy(raw)))


@pytest.mark.parametrize("path", LAUNCHERS, ids=_name)
def test_launcher_has_cpu_head_autoscaling_gpu_workers_raysft_and_token_auth(path):
    cfg = yaml.safe_load(path.read_text())
    types = cfg["available_node_types"]
    assert types[cfg["head_node_type"]]["resources"].get("GPU", 0) == 0
    gpu_groups = {k: v for k, v in types.items() if v["resources"].get("GPU", 0) > 0}
    assert gpu_groups and all(v["min_workers"] == 0 < v["max_workers"] for v in gpu_groups.values())
    assert any("gpu_80gb" in v["resources"] for v in gpu_groups.values()), "the 72B spec asks for gpu_80gb"
    assert f'pip install -q "raysft=={RAYSFT_VERSION}"' in cfg["setup_commands"]
    assert cfg["docker"]["image"].startswith(f"rayproject/ray:{ray.__version__}-") and cfg["docker"]["image"].endswith("-gpu")
    assert cfg["file_mounts"] == {"~/.ray/auth_token": "~/.ray/auth_token"}
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        assert any("export RAY_AUTH_MODE=token;" in c and "ray start" in c for c in cfg[key])
    header = " ".join(_header(path))
    for command in (f"ray up {_name(path)}", "ray job submit", f"ray down {_name(path)}", "ray get-auth-token --generate"):
        assert command in header


# ------------------------------------------------------------------------------------------ KubeRay

def _check_ray_cluster_spec(spec: dict, where: str) -> list[dict]:
    """Check a RayCluster spec (also inside a RayJob); returns every container that runs Ray."""
    assert spec["rayVersion"] == ray.__version__, f"{where}: rayVersion"
    head = spec["headGroupSpec"]
    assert isinstance(head["rayStartParams"], dict)
    containers = head["template"]["spec"]["containers"]
    assert containers and all(c["image"] and c["name"] for c in containers), where
    ports = {p["containerPort"] for p in containers[0]["ports"]}
    assert {6379, 8265} <= ports, f"{where}: the head exposes GCS and the job API"
    groups = spec["workerGroupSpecs"]
    assert groups, f"{where}: no worker group"
    for group in groups:
        assert group["groupName"] and isinstance(group["rayStartParams"], dict)
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], f"{where}: {group['groupName']} replicas"
        workers = group["template"]["spec"]["containers"]
        assert workers and all(c["image"] for c in workers)
        containers = containers + workers
    assert any(int(c["resources"]["limits"].get("nvidia.com/gpu", 0)) >= 1
               for g in groups for c in g["template"]["spec"]["containers"]), f"{where}: no GPU worker group"
    return containers


def _check_pod_template(template: dict, where: str) -> None:
    containers = template["spec"]["containers"]
    assert containers and all(c["name"] and c["image"] for c in containers), where


def _labels_match(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


@pytest.mark.parametrize("path", MANIFESTS, ids=_name)
def test_manifest_has_the_fields_its_kind_requires(path, capsys):
    docs = _docs(path)
    assert docs
    for doc in docs:
        kind, where = doc["kind"], f"{_name(path)}:{doc['kind']}/{doc['metadata']['name']}"
        assert doc["metadata"]["name"]
        if kind in ("RayCluster", "RayJob"):
            assert doc["apiVersion"] == "ray.io/v1", where
        if kind == "RayCluster":
            _check_ray_cluster_spec(doc["spec"], where)
        elif kind == "RayJob":
            spec = doc["spec"]
            assert spec["entrypoint"] and ("rayClusterSpec" in spec or "clusterSelector" in spec), where
            if "rayClusterSpec" in spec:
                _check_ray_cluster_spec(spec["rayClusterSpec"], where)
            _check_pod_template(spec["submitterPodTemplate"], where)
        elif kind in ("Deployment", "StatefulSet"):
            assert doc["apiVersion"] == "apps/v1", where
            assert _labels_match(doc["spec"]["selector"]["matchLabels"], doc["spec"]["template"]["metadata"]["labels"]), where
            _check_pod_template(doc["spec"]["template"], where)
            if kind == "StatefulSet":
                assert doc["spec"]["serviceName"], where
        elif kind == "Service":
            assert doc["spec"]["selector"] and all(p["port"] for p in doc["spec"]["ports"]), where
            targets = [d for _, d in ALL_DOCS if d["kind"] in ("Deployment", "StatefulSet")]
            assert any(_labels_match(doc["spec"]["selector"], t["spec"]["template"]["metadata"]["labels"]) for t in targets), \
                f"{where}: selects no pod"
        elif kind == "Secret":
            assert doc.get("stringData") or doc.get("data"), where
        elif kind == "ConfigMap":
            assert doc["data"], where
        elif kind == "PersistentVolumeClaim":
            assert doc["spec"]["accessModes"] and doc["spec"]["resources"]["requests"]["storage"], where
        elif kind == "Pod":
            assert doc["spec"]["containers"], where
        else:
            pytest.fail(f"{where}: no check for kind {kind}; add one")


def test_every_ray_container_and_client_uses_token_auth():
    checked = []
    for path, doc in ALL_DOCS:
        if doc["kind"] == "RayCluster":
            checked += _check_ray_cluster_spec(doc["spec"], _name(path))
            checked.append({"name": "autoscaler", "env": doc["spec"]["autoscalerOptions"]["env"]})
        elif doc["kind"] == "RayJob":
            checked += _check_ray_cluster_spec(doc["spec"]["rayClusterSpec"], _name(path))
            checked += doc["spec"]["submitterPodTemplate"]["spec"]["containers"]
        elif doc["kind"] == "Deployment" and doc["metadata"]["name"] == "raysft-serve":
            checked += doc["spec"]["template"]["spec"]["containers"]
    assert len(checked) == 7  # cluster head, workers, autoscaler; job head, workers, submitter; serve
    for container in checked:
        env = {e["name"]: e for e in container["env"]}
        assert env["RAY_AUTH_MODE"]["value"] == "token", container["name"]
        assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "raysft-ray-auth", "key": "auth_token"}


def _defined(kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for _, d in ALL_DOCS if d["kind"] == kind}


def _walk(node):
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def test_secret_configmap_and_volume_references_resolve():
    secrets, configmaps, claims = _defined("Secret"), _defined("ConfigMap"), _defined("PersistentVolumeClaim")
    seen = 0
    for _, doc in ALL_DOCS:
        for node in _walk(doc):
            if "secretKeyRef" in node:
                ref = node["secretKeyRef"]
                assert ref["key"] in secrets[ref["name"]]["stringData"], ref
                seen += 1
            if "secret" in node and isinstance(node["secret"], dict) and "secretName" in node["secret"]:
                for item in node["secret"]["items"]:
                    assert item["key"] in secrets[node["secret"]["secretName"]]["stringData"]
            if "configMap" in node and isinstance(node["configMap"], dict):
                assert node["configMap"]["name"] in configmaps
            if "persistentVolumeClaim" in node:
                assert node["persistentVolumeClaim"]["claimName"] in claims
    assert seen == 9  # 3 per Ray cluster (head, workers, autoscaler or submitter), 2 in serve, 1 in PostgreSQL
    # Placeholders the secrets.yaml header replaces; the database URL and PostgreSQL share one password.
    serve = secrets["raysft-serve"]["stringData"]
    assert serve["postgres-password"] == "@DB_PASSWORD@" and "@DB_PASSWORD@" in serve["database-url"]
    header = _header(CLUSTERS / "kuberay" / "secrets.yaml")[0]
    assert all(f"s/{m}/" in header for m in ("@RAY_TOKEN@", "@SERVE_TOKEN@", "@DB_PASSWORD@"))


def test_rayjob_runs_raysft_train_on_the_spec_from_its_configmap(tmp_path, capsys):
    (job,) = _defined("RayJob").values()
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[:2] == ["raysft", "train"]
    args = build_parser().parse_args(argv[1:])
    head = job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    volumes = {v["name"]: v for v in head["volumes"]}
    mount = next(m for m in head["containers"][0]["volumeMounts"] if args.spec.startswith(m["mountPath"] + "/"))
    configmap = _defined("ConfigMap")[volumes[mount["name"]]["configMap"]["name"]]
    text = configmap["data"][args.spec[len(mount["mountPath"]) + 1:]]
    assert text.startswith("# raysft train ")
    spec = tmp_path / "spec.yaml"
    spec.write_text(text)
    assert main(["config", "show", str(spec), *args.overrides]) == 0, capsys.readouterr().err


def test_serve_deployment_runs_raysft_serve_against_the_raycluster_head(capsys):
    serve = _defined("Deployment")["raysft-serve"]["spec"]["template"]["spec"]["containers"][0]
    argv = serve["command"]
    assert argv[:2] == ["raysft", "serve"]
    _check_raysft_argv(argv[1:], ROOT, capsys)
    flags = dict(zip(argv[2::2], argv[3::2]))
    assert set(flags) <= {"--host", "--port", "--db", "--token-file", "--ray-address", "--tls-cert", "--tls-key"}
    (cluster,) = _defined("RayCluster")
    assert flags["--ray-address"] == f"http://{cluster}-head-svc:8265"
    assert flags["--db"] == "$(RAYSFT_DATABASE_URL)" and "RAYSFT_DATABASE_URL" in {e["name"] for e in serve["env"]}
    mounts = {m["mountPath"] for m in serve["volumeMounts"]}
    assert str(Path(flags["--token-file"]).parent) in mounts
    service = _defined("Service")["raysft-serve"]["spec"]["ports"][0]
    assert service["port"] == int(flags["--port"])


def test_images_and_versions_agree_with_the_installed_packages():
    dockerfile = (CLUSTERS / "Dockerfile").read_text()
    assert f"ARG RAY_IMAGE=rayproject/ray:{ray.__version__}-py311-gpu" in dockerfile
    assert "pip install --no-cache-dir /tmp/raysft" in dockerfile
    ignore = (CLUSTERS / "Dockerfile.dockerignore").read_text().split()
    assert ignore[ignore.index("*"):][:4] == ["*", "!pyproject.toml", "!README.md", "!raysft/"]
    images = {c["image"] for _, d in ALL_DOCS for node in _walk(d) for c in node.get("containers", [])}
    raysft_images = {i for i in images if "/raysft:" in i}
    assert raysft_images == {f"CHANGE-ME-registry/raysft:{RAYSFT_VERSION}"}
    assert f"-t CHANGE-ME-registry/raysft:{RAYSFT_VERSION}" in dockerfile
