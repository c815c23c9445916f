"""Nobody else reaches a study's Ray: its ports listen on loopback only, a connection through the machine's
other addresses is refused, and a client without the study's token cannot submit work; a cluster reached over a
public address without token authentication is warned about."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import stat
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from scalekit.study.backend import listeners
from scalekit.study.backend.ray_access import (
    AUTH_MODE,
    LOCAL_ONLY,
    TOKEN_FILE,
    TOKEN_PATH,
    cluster_warning,
    has_token_auth,
    write_token,
)

from tests.helpers.faultkit import command, start_until, study_file, study_processes, wait_for_no_processes

SIOCGIFADDR = 0x8915
DEMO = Path(__file__).resolve().parents[3] / "studies" / "demo.yaml"


def machine_addresses() -> list[str]:
    """This machine's IPv4 addresses outside loopback (one per interface that has one)."""
    found = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        for _, name in socket.if_nameindex():
            try:
                packed = fcntl.ioctl(probe.fileno(), SIOCGIFADDR, struct.pack("256s", name[:15].encode()))
            except OSError:  # no IPv4 address on this interface
                continue
            address = socket.inet_ntoa(packed[20:24])
            if not address.startswith("127."):
                found.append(address)
    return found


@pytest.mark.parametrize(("address", "loopback"), [
    ("127.0.0.1", True), ("127.3.2.1", True), ("::1", True), ("::ffff:127.0.0.1", True),
    ("0.0.0.0", False), ("::", False), ("192.0.2.2", False), ("::ffff:192.0.2.2", False),
])
def test_loopback_means_no_other_machine_can_connect(address: str, loopback: bool) -> None:
    assert listeners.Listener(1, "x", address, 80).loopback is loopback


def test_listening_sockets_of_a_process_are_read_with_their_addresses() -> None:
    assert listeners.supported(), "these machines run Linux; /proc/net/tcp must exist"
    with socket.socket() as local, socket.socket() as wide, socket.socket(socket.AF_INET6) as six, \
            socket.socket(socket.AF_INET6) as mapped:
        local.bind(("127.0.0.1", 0))
        wide.bind(("0.0.0.0", 0))
        six.bind(("::", 0))
        mapped.bind(("::ffff:127.0.0.1", 0))
        for sock in (local, wide, six, mapped):
            sock.listen()
        found = {(f.address, f.port) for f in listeners.listening([os.getpid()])}
        assert {("127.0.0.1", local.getsockname()[1]), ("0.0.0.0", wide.getsockname()[1]),
                ("::", six.getsockname()[1]), ("::ffff:127.0.0.1", mapped.getsockname()[1])} <= found
    assert os.getpid() in listeners.descendants(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert child.pid in listeners.descendants(os.getpid())
    finally:
        child.kill()
        child.wait()


def test_a_ray_port_open_to_the_network_stops_the_study() -> None:
    """What Ray opened since the start is checked; one port on every interface is refused, naming it."""
    from scalekit.study.backend.raytune import RayExposedError, _check_loopback

    with socket.socket() as earlier:
        earlier.bind(("0.0.0.0", 0))
        earlier.listen()
        before = set(listeners.listening([os.getpid()]))
        _check_loopback(before)  # a socket that was there before Ray is not Ray's
        with socket.socket() as opened:
            opened.bind(("0.0.0.0", 0))
            opened.listen()
            port = opened.getsockname()[1]
            with pytest.raises(RayExposedError, match=rf"listens on addresses other machines can reach \(\S+ "
                                                      rf"\(pid {os.getpid()}\) on 0\.0\.0\.0:{port}\), so it was "
                                                      "stopped"):
                _check_loopback(before)


def test_the_token_file_is_readable_by_its_owner_only_and_new_each_time(tmp_path: Path) -> None:
    path = tmp_path / "ray" / TOKEN_FILE
    path.parent.mkdir()
    path.write_text("an old token")
    path.chmod(0o644)
    first = write_token(path).read_text()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and len(first) == 64 and first != "an old token"
    assert write_token(path).read_text() != first


def test_a_public_cluster_without_token_authentication_is_warned_about(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    warning = cluster_warning("8.8.8.8:6379", {}, home)
    assert warning is not None and warning.startswith("backend.address: the Ray cluster at 8.8.8.8:6379 is reached "
                                                      "over the public address 8.8.8.8 without token authentication")
    assert cluster_warning("ray://8.8.8.8:10001", {AUTH_MODE: "disabled"}, home) is not None
    assert cluster_warning("auto", {"RAY_ADDRESS": "8.8.8.8:6379"}, home) is not None
    for address in ("10.1.2.3:6379", "192.168.0.7:6379", "127.0.0.1:6379", "[::1]:6379", "localhost:6379"):
        assert cluster_warning(address, {}, home) is None, address  # private networks and this machine
    assert cluster_warning(None, {}, home) is None  # the study's own Ray: local-only and authenticated
    assert cluster_warning("8.8.8.8:6379", {AUTH_MODE: "token"}, home) is None
    assert cluster_warning("8.8.8.8:6379", {"RAY_AUTH_TOKEN": "secret"}, home) is None
    assert not has_token_auth({"RAY_AUTH_TOKEN": "secret", AUTH_MODE: "disabled"}, home)
    (home / ".ray").mkdir()
    (home / ".ray" / "auth_token").write_text("secret")
    assert cluster_warning("8.8.8.8:6379", {}, home) is None  # Ray turns token mode on when it finds a token


def test_validate_warns_of_a_public_cluster_without_a_token(monkeypatch, capsys, tmp_path: Path) -> None:
    from scalekit.cli import main

    for name in [k for k in os.environ if k.startswith("RAY_")] + ["nnUNet_raw", "nnUNet_preprocessed"]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    data = yaml.safe_load(DEMO.read_text())
    data["output_dir"] = str(tmp_path / "out")
    outputs = {}
    for address in ("8.8.8.8:6379", "10.0.0.5:6379"):
        data["backend"]["address"] = address
        path = tmp_path / f"{address.split(':')[0]}.yaml"
        path.write_text(yaml.safe_dump(data))
        monkeypatch.setattr(sys, "argv", ["scalekit", "study", "validate", str(path)])
        with pytest.raises(SystemExit) as exit_status:
            main()
        assert exit_status.value.code == 0
        outputs[address] = capsys.readouterr().out
    assert f"{tmp_path / '8.8.8.8.yaml'}: warning: backend.address: the Ray cluster at 8.8.8.8:6379 is reached over " \
           "the public address 8.8.8.8 without token authentication" in outputs["8.8.8.8:6379"]
    assert "warning" not in outputs["10.0.0.5:6379"] and outputs["10.0.0.5:6379"].endswith("valid\n")


def _connect_all(host: str, ports: list[int]) -> dict[str, str]:
    """From a second process: the outcome of a TCP connection to each port of ``host``."""
    script = textwrap.dedent("""
        import json, socket, sys
        host, ports, out = sys.argv[1], json.loads(sys.argv[2]), {}
        for port in ports:
            try:
                socket.create_connection((host, port), timeout=5).close()
                out[port] = "connected"
            except OSError as err:
                out[port] = type(err).__name__
        print(json.dumps(out))
    """)
    result = subprocess.run([sys.executable, "-c", script, host, json.dumps(ports)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


SUBMIT = textwrap.dedent("""
    import os, ray
    ray.init(address=os.environ["TARGET"], logging_level=40, log_to_driver=False)
    canary = os.environ["CANARY"]

    @ray.remote
    def write():
        with open(canary, "w") as f:
            f.write("ran")

    ray.get(write.remote(), timeout=60)
""")


def _submit(address: str, canary: Path, home: Path, **ray_env: str) -> subprocess.Popen:
    """A second process that tries to run a task writing ``canary`` on the Ray at ``address``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_") and k != "SCALEKIT_STUDY_DIR"}
    env.update(HOME=str(home), TARGET=address, CANARY=str(canary), **{LOCAL_ONLY: "0"}, **ray_env)
    return subprocess.Popen([sys.executable, "-c", SUBMIT], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env)


@pytest.mark.slow
def test_during_a_study_ray_listens_on_loopback_only_and_needs_the_token(tmp_path: Path, nnunet_dirs: dict) -> None:
    others = machine_addresses()
    assert others, "this machine has no address outside loopback to connect through"
    path = study_file(tmp_path, nnunet_dirs, [3], epochs=2, backend={"kind": "ray"})
    study_dir = tmp_path / "study"
    proc = start_until(command(path), "stage-epoch", tmp_path)  # an epoch done: Ray and its worker are up
    try:
        token = study_dir / "ray" / TOKEN_FILE
        assert stat.S_IMODE(token.stat().st_mode) == 0o600
        found = listeners.listening([proc.pid, *study_processes(study_dir)])  # the driver and Ray's processes
        print("listening during the study:", *(f.describe() for f in found), sep="\n  ")
        assert {"gcs_server", "raylet"} <= {f.process for f in found} and proc.pid in {f.pid for f in found}
        assert [f.describe() for f in found if not f.loopback] == []
        ss = subprocess.run(["ss", "-ltnH"], capture_output=True, text=True, check=True).stdout.split("\n")
        for listener in found:  # the same ports, as `ss -ltn` shows them
            local = [line.split()[3] for line in ss if line.split() and line.split()[3].endswith(f":{listener.port}")]
            assert local and all("127.0.0." in address or "[::1]" in address for address in local), local
        ports = sorted({f.port for f in found})
        for address in others:
            outcomes = _connect_all(address, ports)
            assert set(outcomes.values()) == {"ConnectionRefusedError"}, (address, outcomes)
        gcs = next(f.port for f in found if f.process == "gcs_server")
        home = tmp_path / "someone-else"
        home.mkdir()
        attempts = {
            "no token": _submit(f"127.0.0.1:{gcs}", tmp_path / "canary-no-token", home),
            "a wrong token": _submit(f"127.0.0.1:{gcs}", tmp_path / "canary-wrong", home,
                                     **{AUTH_MODE: "token", "RAY_AUTH_TOKEN": "0" * 64}),
        }
        for what, attempt in attempts.items():
            output, _ = attempt.communicate(timeout=120)
            assert attempt.returncode != 0 and "InvalidAuthToken" in output, (what, output[-2000:])
        assert not (tmp_path / "canary-no-token").exists() and not (tmp_path / "canary-wrong").exists()
        owner = _submit(f"127.0.0.1:{gcs}", tmp_path / "canary-owner", home, **{AUTH_MODE: "token",
                                                                                 TOKEN_PATH: str(token)})
        output, _ = owner.communicate(timeout=120)
        assert owner.returncode == 0 and (tmp_path / "canary-owner").read_text() == "ran", output[-2000:]
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
        proc.stderr.close()
    wait_for_no_processes(study_dir)
