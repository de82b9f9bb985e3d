import sys
from pathlib import Path

import pytest

from serving.errors import PlatformError
from serving.platform.local.pods import materialize, plan_pod


def template(**container_overrides) -> dict:
    container = {
        "name": "kserve-container",
        "image": "odh-serving/modelserver:0.1.0",
        "command": ["python", "-m", "serving.runtimes.server"],
        "args": ["--model_name=iris", "--model_dir=/mnt/models", "--http_port=8080"],
        "ports": [{"containerPort": 8080, "protocol": "TCP"}],
        "env": [{"name": "HTTP_PORT", "value": "8080"}, {"name": "MODEL_DIR", "value": "/mnt/models/sub"},
                {"name": "SECRET", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}],
        **container_overrides,
    }
    return {"spec": {
        "initContainers": [{"name": "storage-initializer", "args": ["s3://bucket/iris", "/mnt/models"]}],
        "containers": [container],
    }}


def test_plan_reads_command_port_probe_and_storage_uri() -> None:
    plan = plan_pod(template(readinessProbe={"httpGet": {"path": "/v1/models/iris", "port": 8080}}))
    assert plan.command[:3] == ("python", "-m", "serving.runtimes.server")
    assert plan.container_port == 8080
    assert plan.readiness_path == "/v1/models/iris"
    assert plan.storage_uri == "s3://bucket/iris"
    assert "SECRET" not in plan.env


def test_materialize_maps_model_mount_port_and_interpreter(tmp_path: Path) -> None:
    argv, env = materialize(plan_pod(template()), port=45123, model_dir=tmp_path)
    assert argv[0] == sys.executable
    assert f"--model_dir={tmp_path}" in argv
    assert "--http_port=45123" in argv
    assert env["HTTP_PORT"] == "45123" and env["PORT"] == "45123"
    assert env["MODEL_DIR"] == f"{tmp_path}/sub"


def test_a_port_flag_with_another_number_is_left_alone(tmp_path: Path) -> None:
    plan = plan_pod(template(args=["--grpc_port=9000", "--http_port=8080"]))
    argv, _ = materialize(plan, port=50000, model_dir=tmp_path)
    assert "--grpc_port=9000" in argv and "--http_port=50000" in argv


def test_an_image_without_command_cannot_run_locally() -> None:
    with pytest.raises(PlatformError, match="no command"):
        plan_pod(template(command=None))
    with pytest.raises(PlatformError, match="containers is empty"):
        plan_pod({"spec": {"containers": []}})


def test_a_pvc_mounted_at_the_model_path_becomes_a_pvc_uri() -> None:
    pod = template()
    pod["spec"].pop("initContainers")
    pod["spec"]["volumes"] = [{"name": "kserve-pvc-source", "persistentVolumeClaim": {"claimName": "models"}}]
    pod["spec"]["containers"][0]["volumeMounts"] = [
        {"name": "kserve-pvc-source", "mountPath": "/mnt/models", "subPath": "iris/v1", "readOnly": True}]
    assert plan_pod(pod).storage_uri == "pvc://models/iris/v1"


def vllm_template() -> dict:
    return {
        "metadata": {"annotations": {"serving.odh.io/runtime-env": "vllm-cpu"}},
        "spec": {"containers": [{
            "name": "main",
            "command": ["python", "-m", "vllm.entrypoints.openai.api_server"],
            "args": ["--model", "/mnt/models", "--port", "8000", "--block-size", "32", "--kv-events-config",
                     '{"endpoint":"tcp://*:5557","topic":"kv@$(POD_IP):8000@tiny"}'],
            "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
            "ports": [{"containerPort": 8000}, {"containerPort": 5557}],
            "readinessProbe": {"httpGet": {"path": "/health", "port": 8000}},
            "livenessProbe": {"httpGet": {"path": "/health", "port": 8000}},
        }]},
    }


def test_every_container_port_maps_in_split_flags_endpoints_and_topics(tmp_path: Path) -> None:
    plan = plan_pod(vllm_template())
    assert plan.all_ports == (8000, 5557)
    assert plan.runtime_env == "vllm-cpu" and plan.liveness_path == "/health"
    argv, env = materialize(plan, port=41000, model_dir=tmp_path, python="/envs/vllm/bin/python",
                            extra_ports={8000: 41000, 5557: 41001})
    assert argv[0] == "/envs/vllm/bin/python"
    assert argv[argv.index("--port") + 1] == "41000"
    assert argv[argv.index("--block-size") + 1] == "32"  # not a port flag: left alone
    assert argv[argv.index("--model") + 1] == str(tmp_path)
    assert argv[argv.index("--kv-events-config") + 1] == '{"endpoint":"tcp://*:41001","topic":"kv@127.0.0.1:41000@tiny"}'
    assert env["POD_IP"] == "127.0.0.1"


def test_an_unmapped_port_inside_a_string_is_left_alone(tmp_path: Path) -> None:
    plan = plan_pod(template(args=["--upstream=http://127.0.0.1:9999/x", "--http_port=8080"]))
    argv, _ = materialize(plan, port=50001, model_dir=tmp_path)
    assert "--upstream=http://127.0.0.1:9999/x" in argv and "--http_port=50001" in argv


def test_a_replica_inherits_the_daemons_environment_without_its_credentials() -> None:
    from serving.platform.local.pods import replica_environment

    daemon = {
        "PATH": "/usr/bin", "HOME": "/home/u", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "ODH_STATE_DIR": "/s",
        "ODH_MAX_REPLICAS": "8", "HF_HUB_OFFLINE": "1", "HF_HOME": "/hf", "TOKENIZERS_PARALLELISM": "false",
        "VLLM_CPU_KVCACHE_SPACE": "1", "MLFLOW_TRACKING_URI": "sqlite:///m.db", "PYTHONPATH": "/p",
        # storage and registry credentials: the storage initializer's alone
        "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s", "AWS_SESSION_TOKEN": "t", "AWS_PROFILE": "p",
        "AWS_SHARED_CREDENTIALS_FILE": "/c", "AWS_ENDPOINT_URL": "http://s3", "HF_TOKEN": "h",
        "HUGGING_FACE_HUB_TOKEN": "h", "MLFLOW_TRACKING_PASSWORD": "pw", "MLFLOW_TRACKING_TOKEN": "t",
        "MLFLOW_TRACKING_USERNAME": "u", "AZURE_STORAGE_CONNECTION_STRING": "a", "AZURE_CLIENT_SECRET": "a",
        "GOOGLE_APPLICATION_CREDENTIALS": "/g.json", "OPENAI_API_KEY": "o", "PREFECT_API_KEY": "p",
        "DB_PASSWORD": "x", "GITHUB_TOKEN": "g", "SSH_AUTH_SOCK": "/agent",
    }
    assert replica_environment(daemon) == {
        "PATH": "/usr/bin", "HOME": "/home/u", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "ODH_STATE_DIR": "/s",
        "ODH_MAX_REPLICAS": "8", "HF_HUB_OFFLINE": "1", "HF_HOME": "/hf", "TOKENIZERS_PARALLELISM": "false",
        "VLLM_CPU_KVCACHE_SPACE": "1", "MLFLOW_TRACKING_URI": "sqlite:///m.db", "PYTHONPATH": "/p",
    }


def test_wildcard_addresses_become_loopback_and_vllm_is_told_its_host(tmp_path: Path) -> None:
    """A pod's 0.0.0.0 is its own namespace; a local process's is the machine's network."""
    plan = plan_pod(vllm_template())
    argv, _ = materialize(plan, port=41000, model_dir=tmp_path, extra_ports={8000: 41000, 5557: 41001})
    assert argv[-2:] == ["--host", "127.0.0.1"]  # vLLM binds every interface when no host is given
    # vLLM binds its publisher only for a wildcard endpoint (any other it connects to): left as written
    assert '"endpoint":"tcp://*:41001"' in argv[argv.index("--kv-events-config") + 1]

    router = plan_pod(template(args=["--host", "0.0.0.0", "--bind=::", "--glob", "*", "--http_port=8080"]))
    argv, _ = materialize(router, port=50001, model_dir=tmp_path)
    assert argv[argv.index("--host") + 1] == "127.0.0.1" and "--bind=127.0.0.1" in argv
    assert argv[argv.index("--glob") + 1] == "*"
    assert argv.count("--host") == 1  # not a vLLM server: nothing added


def test_a_vllm_server_that_names_its_host_keeps_it(tmp_path: Path) -> None:
    pod = vllm_template()
    pod["spec"]["containers"][0]["args"] += ["--host=127.0.0.2"]
    argv, _ = materialize(plan_pod(pod), port=41000, model_dir=tmp_path, extra_ports={8000: 41000, 5557: 41001})
    assert "--host=127.0.0.2" in argv and "--host" not in argv


def test_a_wildcard_zmq_endpoint_becomes_an_ipc_socket_in_the_pod_directory(tmp_path: Path) -> None:
    """vLLM binds ipc endpoints (and connects to any tcp address but a wildcard): a Unix socket in the 0700
    state directory keeps the KV-event stream, which carries prompt token ids, off the network."""
    from serving.platform.local.pods import zmq_ipc_endpoint

    pod_dir = tmp_path / "pods" / "default" / "chat-kserve-abc-0"
    argv, _ = materialize(plan_pod(vllm_template()), port=41000, model_dir=tmp_path,
                          extra_ports={8000: 41000, 5557: 41001}, ipc_dir=pod_dir)
    endpoint = f"ipc://{pod_dir}/zmq-5557.sock"
    assert argv[argv.index("--kv-events-config") + 1] == (
        '{"endpoint":"' + endpoint + '","topic":"kv@127.0.0.1:41000@tiny"}')  # the HTTP port still maps
    assert argv[argv.index("--port") + 1] == "41000"
    assert zmq_ipc_endpoint(pod_dir, 5557) == endpoint  # what the daemon gives the router
    # a tcp endpoint that is not a wildcard (vLLM connects to it) and an unmapped port are left alone
    pod = template(args=["--pub=tcp://127.0.0.1:5557", "--other=tcp://*:9999"], ports=[{"containerPort": 8080}, {"containerPort": 5557}])
    argv, _ = materialize(plan_pod(pod), port=50001, model_dir=tmp_path, extra_ports={5557: 50002}, ipc_dir=pod_dir)
    assert "--pub=tcp://127.0.0.1:50002" in argv and "--other=tcp://*:9999" in argv


def test_a_pod_directory_too_long_for_a_unix_socket_keeps_tcp_and_says_how_to_fix_it(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from serving.platform.local.pods import zmq_ipc_endpoint

    fits = Path("/" + "d" * (107 - len("/zmq-5557.sock") - 1))  # the path is 107 bytes: the most sun_path holds
    assert zmq_ipc_endpoint(fits, 5557) == f"ipc://{fits}/zmq-5557.sock"
    too_long = Path(str(fits) + "d")
    assert zmq_ipc_endpoint(too_long, 5557) is None
    with caplog.at_level("WARNING", logger="serving.platform.local.pods"):
        argv, _ = materialize(plan_pod(vllm_template()), port=41000, model_dir=tmp_path,
                              extra_ports={8000: 41000, 5557: 41001}, ipc_dir=too_long)
    assert '"endpoint":"tcp://*:41001"' in argv[argv.index("--kv-events-config") + 1]
    assert "shorter state directory" in caplog.text and str(too_long) in caplog.text


def test_only_the_runtimes_own_python_module_forks_and_only_without_startup_settings(tmp_path: Path) -> None:
    """Which materialized pods the fork server may run: `python -m <a runnable module>` with its interpreter,
    and no container env that an interpreter or a native library reads when it starts (the zygote read it)."""
    from serving.platform.local.forkserver import ForkServer

    server = ForkServer(tmp_path / "log", python="/venv/bin/python", runnable=("serving.runtimes.server",))
    argv, env = materialize(plan_pod(template()), port=41000, model_dir=tmp_path, python="/venv/bin/python")
    assert not server.can_fork(argv, env)  # not ready yet: the replica is spawned, nothing waits
    server.ready = True
    assert server.can_fork(argv, env)
    assert not server.can_fork(["/other/venv/bin/python", *argv[1:]], env)  # a runtime environment's interpreter
    assert not server.can_fork([argv[0], "-m", "vllm.entrypoints.openai.api_server"], env)  # not preloaded here
    assert not server.can_fork([argv[0], "-c", "print()"], env)  # a custom command
    for name in ("PYTHONPATH", "LD_PRELOAD", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MALLOC_ARENA_MAX"):
        assert not server.can_fork(argv, {**env, name: "1"}), name
    assert server.can_fork(argv, {**env, "MY_SETTING": "x"})


def test_the_fork_server_is_on_by_default_and_off_with_odh_fork_server_0(tmp_path: Path) -> None:
    from serving.platform.local.forkserver import ForkServer

    server = ForkServer.from_env(tmp_path, {})
    assert server is not None and server.log_path == tmp_path / "forkserver.log"
    for off in ("0", "false", "off", "No"):
        assert ForkServer.from_env(tmp_path, {"ODH_FORK_SERVER": off}) is None
