"""`prefect.yaml` deployed with `prefect deploy` against a real Prefect server on 127.0.0.1, then read back."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from repo_copy import ROOT, copy_repo

TINY = {  # as in test_flow: a run of the deployment takes about a minute
    "data": {"source_train_per_class": 50, "source_test_per_class": 12},
    "model": {"bottleneck_dim": 32, "discriminator_hidden": 32, "region_discriminator_hidden": 8},
    "train": {"iterations": 150, "eval_interval": 75, "log_interval": 25, "batch_size": 32},
    "evaluate": {"tsne_points": 40, "attention_images": 8},
}

PREFECT = str(Path(sys.executable).parent / "prefect")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A Prefect server with its own home and database, on a free loopback port."""
    home = tmp_path_factory.mktemp("prefect-server-home")
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_UI_ENABLED": "false", "PREFECT_API_URL": api, "PYTHONPATH": ""}
    with open(home / "server.log", "w") as log:
        proc = subprocess.Popen([PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)], env=env,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{api}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"Prefect server did not start:\n{(home / 'server.log').read_text()}")
            time.sleep(0.5)
        yield env
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def prefect(env: dict, cwd: Path, *args: str) -> str:
    result = subprocess.run([PREFECT, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"prefect {' '.join(args)} exited {result.returncode}\n{result.stdout}\n" \
                                   f"{result.stderr}"
    return result.stdout


@pytest.mark.slow
def test_prefect_yaml_deploys_with_its_schedule_entrypoint_and_parameters(server, tmp_path):
    repo = copy_repo(tmp_path / "repo", TINY)
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"][0]
    prefect(server, repo, "work-pool", "create", spec["work_pool"]["name"], "--type", "process")
    out = prefect(server, repo, "--no-prompt", "deploy", "--name", spec["name"])
    assert "tada-retrain/weekly-retrain" in out, out

    deployment = json.loads(prefect(server, repo, "deployment", "inspect", "tada-retrain/weekly-retrain",
                                    "--output", "json"))
    assert deployment["entrypoint"] == "pipelines/flow.py:retrain"
    assert deployment["parameters"] == {"overrides": {}}
    assert deployment["work_pool_name"] == "tada-process" and deployment["work_queue_name"] == "default"
    [schedule] = deployment["schedules"]
    assert schedule["active"] and schedule["schedule"]["cron"] == "0 3 * * 1"
    assert schedule["schedule"]["timezone"] == "UTC"
    assert deployment["global_concurrency_limit"]["limit"] == 1  # one run at a time: DVC locks the repository
    # the worker will run the flow where it was deployed from
    assert deployment["pull_steps"] == [
        {"prefect.deployments.steps.set_working_directory": {"directory": str(repo)}}]
    # the flow's own parameter schema travelled with it
    assert set(deployment["parameter_openapi_schema"]["properties"]) == {"overrides", "experiment_name", "repo",
                                                                         "sync_remote"}

    # a run of the deployment, executed by a real process worker in the deployed directory
    out = prefect(server, repo, "deployment", "run", "tada-retrain/weekly-retrain", "--param",
                  'overrides={"train.seed": 3}')
    run_id = next(line.split()[-1] for line in out.splitlines() if "UUID" in line)
    prefect(server, repo, "worker", "start", "--pool", "tada-process", "--run-once")
    flow_run = json.loads(prefect(server, repo, "flow-run", "inspect", run_id, "--output", "json"))
    assert flow_run["state"]["type"] == "COMPLETED", flow_run["state"]
    assert json.loads((repo / "reports/gate.json").read_text())["promoted"]
    assert (repo / "models/production/model.onnx").is_file()
    assert json.loads((repo / "reports/gate.json").read_text())["context"]["overrides"] == {"train.seed": 3}
