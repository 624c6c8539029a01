"""Build, start and stop the real CRD API server (etcd + conformance-apiserver) on 127.0.0.1.

Used by the conformance tier's fixtures, and by hand:

    python tests/conformance/conformance_server.py    # prints a KUBECONFIG to use; Ctrl-C stops the server
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
# Run as a script under PYTHONSAFEPATH=1 (as the Makefile does), this folder is not on sys.path.
sys.path.insert(0, str(HERE))
from conformance_kube import kubeconfig_client  # noqa: E402

BUILD_SCRIPT = HERE / "build-apiserver.sh"
CACHE_DIR = Path(os.environ.get("INTERP_APISERVER_CACHE", Path.home() / ".cache" / "interp-operator" / "apiserver"))
FAILURE_LOG = CACHE_DIR / "last-build-failure.log"
START_TIMEOUT_S = 60


class BuildFailed(Exception):
    pass


def build_apiserver() -> Path:
    """Run the build script (a no-op on a warm cache) and return the directory holding the binaries."""
    lines: list[str] = []
    with subprocess.Popen(["bash", str(BUILD_SCRIPT), str(CACHE_DIR)], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True) as build:
        assert build.stderr is not None and build.stdout is not None
        try:
            for line in build.stderr:  # progress lines, as they come
                sys.stderr.write(line)
                lines.append(line.rstrip("\n"))
            stdout = build.stdout.read()
        except BaseException:  # pytest-timeout or ^C: do not leave a build running
            build.kill()
            raise
    if build.returncode != 0:
        # The tail goes into the banner (from a file, so xdist's controller sees it too), the last line into
        # each skip reason.
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        FAILURE_LOG.write_text("\n".join(lines[-25:]) + "\n")
        raise BuildFailed(f"build-apiserver.sh exited {build.returncode}: {lines[-1] if lines else 'no output'}")
    FAILURE_LOG.unlink(missing_ok=True)
    return Path(stdout.strip().splitlines()[-1])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Process:
    name: str
    popen: subprocess.Popen
    log: Path

    def log_tail(self, lines: int = 30) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        if self.popen.poll() is not None:
            return
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(timeout=10)


def spawn(name: str, argv: list[str], workdir: Path) -> Process:
    log = workdir / f"{name}.log"
    with log.open("wb") as out:
        popen = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    return Process(name, popen, log)


def start_etcd(bin_dir: Path, workdir: Path) -> tuple[Process, str]:
    client, peer = free_port(), free_port()
    client_url, peer_url = f"http://127.0.0.1:{client}", f"http://127.0.0.1:{peer}"
    etcd = spawn("etcd", [
        str(bin_dir / "etcd"), "--name", "conformance", "--data-dir", str(workdir / "etcd"),
        "--listen-client-urls", client_url, "--advertise-client-urls", client_url,
        "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
        "--initial-cluster", f"conformance={peer_url}", "--log-level", "warn",
        # Throw-away data: no fsync wait per write keeps the tier fast.
        "--unsafe-no-fsync",
    ], workdir)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if etcd.popen.poll() is not None:
            raise RuntimeError(f"etcd exited with {etcd.popen.returncode}:\n{etcd.log_tail()}")
        try:
            with urllib.request.urlopen(f"{client_url}/health", timeout=2) as resp:
                if b'"health":"true"' in resp.read():
                    return etcd, client_url
        except OSError:
            pass
        time.sleep(0.2)
    etcd.stop()
    raise RuntimeError(f"etcd not healthy after {START_TIMEOUT_S} s:\n{etcd.log_tail()}")


def wait_ready(apiserver: Process, kubeconfig: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    last = "no kubeconfig written yet"
    while time.monotonic() < deadline:
        if apiserver.popen.poll() is not None:
            raise RuntimeError(f"apiserver exited with {apiserver.popen.returncode}:\n{apiserver.log_tail()}")
        if kubeconfig.exists():
            server, token, tls = kubeconfig_client(kubeconfig)
            request = urllib.request.Request(f"{server}/readyz", headers={"Authorization": f"Bearer {token}"})
            try:
                with urllib.request.urlopen(request, context=tls, timeout=2) as resp:
                    if resp.status == 200:
                        return
            except urllib.error.HTTPError as err:
                last = f"/readyz {err.code}: {err.read().decode(errors='replace')[-500:]}"
            except OSError as err:
                last = f"/readyz: {err}"
        time.sleep(0.2)
    raise RuntimeError(f"apiserver not ready after {START_TIMEOUT_S} s ({last}):\n{apiserver.log_tail()}")


@contextlib.contextmanager
def running_apiserver(bin_dir: Path) -> Iterator[Path]:
    """etcd and the API server on free 127.0.0.1 ports with throw-away data; yields the admin kubeconfig's path."""
    with tempfile.TemporaryDirectory(prefix="interp-conformance-") as tmp:
        workdir = Path(tmp)
        etcd, etcd_url = start_etcd(bin_dir, workdir)
        kubeconfig = workdir / "kubeconfig"
        try:
            apiserver = spawn("apiserver", [
                str(bin_dir / "conformance-apiserver"), "--etcd-servers", etcd_url,
                "--bind-address", "127.0.0.1", "--secure-port", "0", "--external-hostname", "127.0.0.1",
                "--cert-dir", str(workdir / "certs"), "--write-kubeconfig", str(kubeconfig),
            ], workdir)
            try:
                wait_ready(apiserver, kubeconfig)
                yield kubeconfig
            finally:
                apiserver.stop()
        finally:
            etcd.stop()


def main() -> None:
    def interrupt(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    with running_apiserver(build_apiserver()) as kubeconfig:
        print(f"real CRD API server ready; Ctrl-C stops it\nexport KUBECONFIG={kubeconfig}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)


if __name__ == "__main__":
    main()
