"""Rehearse the README's cluster recipe for real: `ray up` a cluster of SSH servers on this machine, run a grid on
it, bring the results back, `ray down`, and time each stage.

    sudo .venv/bin/python bench/bench_ray_up.py [--workers 2] [--image stock|prebuilt] [--wheelhouse DIR]
    .venv/bin/python bench/bench_ray_up.py --dry-run      # only the generated config, checked by Ray

Each node is a small machine of its own: a network namespace with its own address (10.22.0.10 the head, .11, .12
... the workers, on a bridge), and its own PID, mount and host-name namespaces, in which sshd runs with a key made
for the run; /root, /tmp, /dev/shm and /run are the node's own folders, so each node has its own home (the venv, the
checkout, Ray's session; its own /dev/shm too, so that what one node cleans up there, believing its owner dead
because that process lives in another PID namespace, is never another machine's) while sharing the machine's system: Debian's /usr/bin/python3, which refuses `pip
install` outside a virtual environment (PEP 668). The "laptop" that types the commands is one more namespace
(its own /tmp and HOME). cluster.yaml's start commands (which stop, then start Ray) therefore see only their
node's processes (its own /proc); nothing of the machine's network or of another Ray on it is touched, and the
bench itself ends processes only by pid.

The cluster config is cluster.yaml with its provider section swapped for Ray's local provider, exactly as
cluster.yaml's comments tell users to do (``local_cluster``): the file mounts, setup and start commands are the
project's own. The nodes have no internet: their pip reads a wheelhouse through the node image's pip.conf.
``--image stock`` (default): the image's Python has none of biasgrid's libraries; the wheelhouse is ``pip wheel``
of the project with every dependency, made on the laptop (``--wheelhouse`` reuses one), and setup installs all
of it into the venv on every node (minutes). ``--image prebuilt``: the image's Python already has the libraries
(this checkout's own, linked into the node's /usr/local/lib/python3.X/dist-packages) except Ray and biasgrid;
setup creates the venv, which sees them, and installs Ray and biasgrid into it (seconds, not byte-compiled;
what the test runs).

Stages, each timed, as README "On a Ray cluster" types them: ``ray get-auth-token --generate``, ``ray up`` (and
its own [k/n] stages), the workers joining (set up by the head's autoscaler), ``ray rsync-up`` of the grid
config, ``ray exec 'biasgrid run --address auto ...'``, ``ray rsync-down`` of the results, ``biasgrid report``
on the laptop, ``ray down``, then each worker's remaining Ray processes ended by pid; also the recipe cluster.yaml had before,
refused by the nodes' Python (PEP 668). Then the jobs and rows per node (each records its ``node``), what each
node still runs after ``ray down`` (the local provider stops Ray on the head only), ``--linger`` s later, and
after those are ended, and the teardown: every namespace, process and folder of the run removed.
Exit 0 when jobs ran on every node and nothing was left. Killed itself (even SIGKILL), the bench's processes
end with it (a parent-death signal on each namespace's unshare); its namespaces (`ip netns list`: bgup<pid>l,
bgup<pid>n<i>) and its folder /var/tmp/bgrayup-* then stay: `ip netns del` and `rm -rf` them.
"""

from __future__ import annotations

import argparse
import copy
import ctypes
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
NET = "10.22.0"        # the rehearsal's subnet: it exists only inside its own namespaces
HEAD_HOST = 10         # the head is NET.10, workers NET.11, NET.12, ...
SSHD = "/usr/sbin/sshd"
NODE_OWN = ("/root", "/tmp", "/dev/shm", "/run")   # each node has its own (a folder of its own mounted there)
TOOLS = ("ip", "unshare", "ssh", "ssh-keygen", "rsync", "mount", "hostname")
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
STAGE = re.compile(r"\[(\d+)/(\d+)\]\s+(.*)")
STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\s")   # Ray's log lines: "2026-12-03 14:01:53,686 INFO ..."
# cluster.yaml's setup before the rehearsal: pip into the system Python (--user), which PEP 668 refuses here
OLD_RECIPE = "/usr/bin/python3 -m pip install --user --dry-run six"
VENV = "biasgrid-venv"             # where cluster.yaml's setup puts Ray and biasgrid, in the home
# Ray >= 2.50 makes `ray up` start the autoscaler v2, which does not launch workers of the local provider (the
# workers never join: ray-project/ray#57153); v1 does. Needed for machines of one's own only.
LOCAL_PROVIDER_ENV = {"RAY_UP_enable_autoscaler_v2": "0"}

GRID = """\
[data.synth]
identities_per_group = 30
dim = 32
[grid]
seeds = {seeds}
models = ["logreg"]
[protocol]
train_per_gender = 10
test_per_gender = 8
[verification]
max_impostor_pairs = 20000
bootstrap = 20
[tsne]
perplexity = 5.0
pca_dims = 10
subsets = ["all"]
[run]
report = false
"""


def node_python() -> str:
    """The nodes' Python: this machine's /usr/bin/python3, as "3.11" ("" when there is none)."""
    if not os.access("/usr/bin/python3", os.X_OK):
        return ""
    done = subprocess.run(["/usr/bin/python3", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                          capture_output=True, text=True)
    return done.stdout.strip()


def unavailable(image: str = "stock") -> str | None:
    """Why this machine cannot run the rehearsal (None when it can): root, sshd, the tools, the namespaces; for the
    prebuilt image also the same Python minor version here and in /usr/bin/python3."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, mounts and sshd)"
    if not os.access(SSHD, os.X_OK):
        return f"no {SSHD} (Debian/Ubuntu: apt-get install openssh-server)"
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        return f"missing {', '.join(missing)} (Debian/Ubuntu: apt-get install iproute2 openssh-client rsync)"
    version = node_python()
    if not version:
        return "no /usr/bin/python3 for the nodes"
    if image == "prebuilt":
        here = "%d.%d" % sys.version_info[:2]
        if version != here:
            return f"the prebuilt image links this Python's libraries ({here}) for /usr/bin/python3 ({version})"
        if not Path(f"/usr/local/lib/python{version}/dist-packages").is_dir():
            return f"no /usr/local/lib/python{version}/dist-packages to mount the prebuilt libraries on"
    probe = f"bgupprobe{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"cannot create a network namespace: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    ns = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "--uts", "true"], capture_output=True,
                        text=True)
    if ns.returncode != 0:
        return f"cannot create PID/mount/UTS namespaces: {ns.stderr.strip()}"
    return None


def local_cluster(cluster: dict, head_ip: str, worker_ips: list[str], user: str, key: str) -> dict:
    """cluster.yaml for machines of one's own, as its comments say: Ray's local provider (head_ip, worker_ips),
    auth with that user and key, no node types (the local provider makes them), max_workers = len(worker_ips).
    Everything else (file mounts, setup and start commands) is cluster.yaml's own."""
    config = copy.deepcopy(cluster)
    config["provider"] = {"type": "local", "head_ip": head_ip, "worker_ips": list(worker_ips)}
    config["auth"] = {"ssh_user": user, "ssh_private_key": key}
    config.pop("available_node_types", None)
    config.pop("head_node_type", None)
    config["max_workers"] = len(worker_ips)
    return config


def checked(config: dict) -> dict:
    """``config`` as ``ray up`` prepares and validates it (Ray's own functions; an exception when invalid)."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(config)
    validate_config(prepared)
    return prepared


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(argv, capture_output=True, text=True)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {done.returncode}: {done.stderr.strip()}")
    return done


def _die_with_us() -> None:
    """In a child before it execs: SIGKILL it when this process dies (Linux PR_SET_PDEATHSIG). unshare ignores
    SIGTERM; killed, its --kill-child kills the namespace's first process, and the kernel every other one."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)


def pid_namespace(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def processes_in(namespace: str) -> dict[int, str]:
    """Every process of a PID namespace (seen from this one): pid -> the start of its command line."""
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and pid_namespace(int(entry)) == namespace:
            try:
                found[int(entry)] = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")[:160].decode(
                    errors="replace").strip()
            except OSError:
                continue
    return found


@dataclass
class Run:
    """A finished command: exit status, seconds, and its output lines, each with when it arrived."""

    returncode: int
    started: float                   # seconds since the epoch
    seconds: float
    lines: list[tuple[float, str]]   # (seconds since the epoch, text)

    def text(self, last: int = 40) -> str:
        return "\n".join(text for _, text in self.lines[-last:])


def stage_times(run: Run) -> dict[str, float]:
    """``ray up``'s "[k/n] what" stage lines: seconds from each to the next (the last one to the command's end),
    and before the first one. A line's time is Ray's own stamp on it where it has one (Ray's log and the remote
    output arrive interleaved)."""
    marks = [(run.started, "(before [1/n]: config, provider, head node record)")]
    for at, text in run.lines:
        found, stamp = STAGE.search(text), STAMP.match(text)
        if found:
            when = _stamp(stamp.group(1)) if stamp else at
            marks.append((when, f"[{found.group(1)}/{found.group(2)}] {found.group(3).strip()}"))
    ends = [when for when, _ in marks[1:]] + [run.started + run.seconds]
    return {what: round(stop - when, 1) for (when, what), stop in zip(marks, ends)}


def _stamp(text: str) -> float:
    """Seconds since the epoch of a stamp "2026-12-03 14:01:53,686" (local time, as Ray writes it)."""
    return time.mktime(time.strptime(text[:19], "%Y-%m-%d %H:%M:%S")) + int(text[20:]) / 1e3


@dataclass
class Node:
    name: str     # host name
    ip: str
    root: Path    # its folders (root, tmp, shm, run: mounted on NODE_OWN) and sshd's files
    proc: subprocess.Popen | None = None
    namespace: str | None = None   # its PID namespace, once sshd runs

    @property
    def home(self) -> Path:
        return self.root / "root"


@dataclass
class Sandbox:
    """The laptop and the nodes (namespaces, folders, sshd), created by ``start`` and all removed by ``close``."""

    workers: int
    base: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="bgrayup-", dir="/var/tmp")))
    tag: str = field(default_factory=lambda: f"bgup{os.getpid()}")
    nodes: list[Node] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)

    @property
    def laptop(self) -> str:
        return f"{self.tag}l"

    @property
    def key(self) -> Path:
        return self.base / "key"

    def start(self, wheelhouse: Path, site: Path | None) -> None:
        """The namespaces, the bridge, a key, each node's folders and image files, and sshd on every node;
        ``site``: a folder of libraries mounted as the nodes' /usr/local/lib/python3.X/dist-packages."""
        for folder in ("laptop/home", "laptop/tmp"):
            (self.base / folder).mkdir(parents=True)
        os.chmod(self.base / "laptop/tmp", 0o1777)
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "bench_ray_up", "-f", str(self.key))
        self._netns(self.laptop)
        sh("ip", "-n", self.laptop, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", self.laptop, "addr", "add", f"{NET}.1/24", "dev", "br0")
        sh("ip", "-n", self.laptop, "link", "set", "br0", "up")
        for i in range(self.workers + 1):
            node = Node("bgup-head" if i == 0 else f"bgup-worker{i}", f"{NET}.{HEAD_HOST + i}",
                        self.base / f"node{i}")
            self.nodes.append(node)
            self._image(node, wheelhouse, compile_=site is None)
            ns = f"{self.tag}n{i}"
            self._netns(ns)
            sh("ip", "link", "add", f"v{i}", "netns", self.laptop, "type", "veth", "peer", "name", "eth0",
               "netns", ns)
            sh("ip", "-n", self.laptop, "link", "set", f"v{i}", "master", "br0", "up")
            sh("ip", "-n", ns, "addr", "add", f"{node.ip}/24", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
            sh("ip", "-n", ns, "route", "add", "default", "via", f"{NET}.1")   # Ray finds its IP by this route
            self._sshd(node, ns, site)
        for node in self.nodes:
            self._wait_for_ssh(node)

    def _netns(self, name: str) -> None:
        sh("ip", "netns", "add", name)
        self.namespaces.append(name)
        sh("ip", "-n", name, "link", "set", "lo", "up")

    def _image(self, node: Node, wheelhouse: Path, compile_: bool) -> None:
        """A fresh node's disk: an empty home with the distribution's shell files, the run's public key, and a
        pip.conf pointing at the wheelhouse (the node has no internet; without ``compile_``, pip does not
        byte-compile what it installs, which then compiles on first import); its own /tmp, /dev/shm and /run;
        sshd's config."""
        for folder in ("root/.ssh", "root/.config/pip", "tmp", "shm", "run/sshd"):
            (node.root / folder).mkdir(parents=True)
        os.chmod(node.home, 0o700)
        os.chmod(node.root / "tmp", 0o1777)
        os.chmod(node.root / "shm", 0o1777)
        for name in (".bashrc", ".profile"):
            if Path("/etc/skel", name).exists():
                shutil.copy(Path("/etc/skel", name), node.home / name)
        shutil.copy(self.key.with_suffix(".pub"), node.home / ".ssh/authorized_keys")
        (node.home / ".config/pip/pip.conf").write_text(
            f"[global]\nno-index = true\nfind-links = {wheelhouse}\ndisable-pip-version-check = true\n"
            + ("" if compile_ else "[install]\nno-compile = true\n"))
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(node.root / "ssh_host_ed25519_key"))
        (node.root / "sshd_config").write_text("\n".join([
            f"ListenAddress {node.ip}", f"HostKey {node.root / 'ssh_host_ed25519_key'}", "PidFile none",
            "UsePAM no", "PermitRootLogin prohibit-password", "PasswordAuthentication no",
            "KbdInteractiveAuthentication no", "AuthorizedKeysFile .ssh/authorized_keys", "StrictModes no",
            "MaxStartups 100:30:200", "MaxSessions 100", "PrintMotd no", "LogLevel ERROR",
            "Subsystem sftp internal-sftp", ""]))

    def _sshd(self, node: Node, ns: str, site: Path | None) -> None:
        mounts = " && ".join(f'mount --bind "$2/{Path(where).name}" {where}' for where in NODE_OWN)
        if site is not None:
            target = f"/usr/local/lib/python{node_python()}/dist-packages"
            mounts += f' && mount --bind "$4" {target} && mount -o remount,bind,ro {target}'
        script = f'hostname "$1" && {mounts} && exec "$3" -D -e -f "$2/sshd_config"'
        with open(node.root / "sshd.log", "wb") as log:
            node.proc = subprocess.Popen(["ip", "netns", "exec", ns, "unshare", "--pid", "--kill-child",
                                          "--mount-proc", "--uts", "sh", "-c", script, "sh", node.name,
                                          str(node.root), SSHD, str(site or "")], stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=log, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
                                         preexec_fn=_die_with_us)

    def _wait_for_ssh(self, node: Node, timeout: float = 60.0) -> None:
        deadline = time.time() + timeout
        assert node.proc is not None
        while time.time() < deadline:
            if node.proc.poll() is not None:
                raise RuntimeError(f"sshd on {node.name} exited: {(node.root / 'sshd.log').read_text()[-2000:]}")
            try:   # the namespace's first process: unshare's child, sshd once it runs
                init = int(Path(f"/proc/{node.proc.pid}/task/{node.proc.pid}/children").read_text().split()[0])
                ready = Path(f"/proc/{init}/comm").read_text().strip() == "sshd"   # exec'd by sh
            except (OSError, IndexError, ValueError):
                ready = False
            if ready:
                node.namespace = pid_namespace(init)
                done = self.on_laptop([*self.ssh(node), "hostname"], timeout=30)
                if done.returncode == 0 and done.lines and done.lines[-1][1] == node.name:
                    return
            time.sleep(0.3)
        raise RuntimeError(f"sshd on {node.name} ({node.ip}) did not answer within {timeout:.0f} s")

    def ssh(self, node: Node) -> list[str]:
        """``ssh`` to ``node`` with the run's key, as the laptop's user would (command to follow)."""
        return ["ssh", "-i", str(self.key), "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                "-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR", f"root@{node.ip}"]

    def on_laptop(self, argv: list[str], timeout: float = 900.0, echo: bool = False) -> Run:
        """``argv`` on the laptop (its network, /tmp and HOME; its own PID namespace, so what the command leaves
        running, such as SSH control masters, ends with it), from the repository root; each output line timed."""
        script = 'mount --bind "$1" /tmp && shift && exec "$@"'
        env = {"PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
               "HOME": str(self.base / "laptop/home"), "LANG": "C.UTF-8", "TERM": "dumb", "PYTHONUNBUFFERED": "1",
               "RAY_USAGE_STATS_ENABLED": "0", **LOCAL_PROVIDER_ENV}
        start, started = time.perf_counter(), time.time()
        proc = subprocess.Popen(["ip", "netns", "exec", self.laptop, "unshare", "--pid", "--kill-child",
                                 "--mount-proc", "sh", "-c", script, "sh", str(self.base / "laptop/tmp"), *argv],
                                cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, errors="replace", preexec_fn=_die_with_us)
        timer = threading.Timer(timeout, proc.kill)   # unshare --kill-child: the command and its namespace too
        timer.start()
        lines: list[tuple[float, str]] = []
        assert proc.stdout is not None
        try:
            for raw in proc.stdout:
                text = ANSI.sub("", raw.rstrip("\n"))
                lines.append((time.time(), text))
                if echo:
                    print(f"  | {text}", flush=True)
            proc.wait()
        finally:
            timer.cancel()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        return Run(proc.returncode, started, time.perf_counter() - start, lines)

    def ray(self, *args: str, echo: bool = False, timeout: float = 900.0) -> Run:
        """``ray ARGS`` on the laptop; RuntimeError with its output's tail when it fails."""
        done = self.on_laptop(["ray", *args], timeout=timeout, echo=echo)
        if done.returncode != 0:
            raise RuntimeError(f"ray {' '.join(args)}: exit {done.returncode} after {done.seconds:.0f} s\n"
                               + done.text())
        return done

    def left_running(self) -> dict[str, list[str]]:
        """Per node, what runs in it besides its sshd: command lines (their start)."""
        found = {}
        for node in self.nodes:
            if node.namespace:
                procs = processes_in(node.namespace)
                first = min(procs) if procs else None
                found[node.name] = sorted(cmd for p, cmd in procs.items() if p != first)
        return found

    def end_processes(self, node: Node, grace: float = 15.0) -> None:
        """End what runs in ``node`` besides its first process (sshd), each by its pid: SIGTERM, then SIGKILL after
        ``grace`` s."""
        if not node.namespace:
            return
        procs = processes_in(node.namespace)
        first = min(procs) if procs else None
        mine = [p for p in procs if p != first]
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in mine:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.time() + grace
            while time.time() < deadline and any(Path(f"/proc/{p}").exists() for p in mine):
                time.sleep(0.2)

    def close(self) -> list[str]:
        """End every node (killing unshare kills its namespace's first process, and with it every process of the
        namespace), remove the namespaces and the folders; returns what could not be removed (normally nothing)."""
        for node in self.nodes:
            if node.proc is not None and node.proc.poll() is None:
                node.proc.kill()
                node.proc.wait(timeout=30)
        deadline = time.time() + 30
        while time.time() < deadline and any(n.namespace and processes_in(n.namespace) for n in self.nodes):
            time.sleep(0.2)
        problems = [f"{n.name}: processes left {processes_in(n.namespace)}" for n in self.nodes
                    if n.namespace and processes_in(n.namespace)]
        for ns in reversed(self.namespaces):
            done = sh("ip", "netns", "del", ns, check=False)
            if done.returncode != 0:
                problems.append(f"namespace {ns}: {done.stderr.strip()}")
        subprocess.run(["rm", "-rf", "--one-file-system", str(self.base)], capture_output=True)
        if self.base.exists():
            problems.append(f"folder {self.base} not removed")
        return problems


class Unavailable(RuntimeError):
    """What the rehearsal needs from outside (the wheels for the nodes) cannot be had here."""


def build_wheelhouse(target: Path, image: str) -> float:
    """The wheels the nodes install from, made on the laptop (which has the internet); returns its seconds. Stock
    image: this checkout and every dependency; prebuilt: only what the image lacks (this Ray), and for both pip,
    setuptools and wheel (building biasgrid's wheel on the nodes). Unavailable when pip cannot get them."""
    import ray

    pip = [sys.executable, "-m", "pip"]
    start = time.perf_counter()
    try:
        if image == "stock":
            sh(*pip, "wheel", "-q", "--no-cache-dir", "--wheel-dir", str(target), str(REPO), "pip", "setuptools",
               "wheel")
        else:
            sh(*pip, "download", "-q", "--no-deps", "--dest", str(target), f"ray=={ray.__version__}")
            sh(*pip, "download", "-q", "--dest", str(target), "pip", "setuptools", "wheel")
    except RuntimeError as exc:
        raise Unavailable(f"pip cannot get the nodes' wheels (no internet or index?): {exc}") from None
    return time.perf_counter() - start


def prebuilt_site(target: Path) -> Path:
    """The prebuilt image's libraries: links to this environment's site-packages, all but Ray, biasgrid and the
    packaging tools (the venv brings its own)."""
    site = Path(sysconfig.get_paths()["purelib"])
    skip = re.compile(r"^(ray|biasgrid|__editable__.*|_?distutils.*|pip|setuptools|pkg_resources|wheel)([-_.].*)?$")
    target.mkdir()
    for entry in site.iterdir():
        if not skip.match(entry.name) and entry.name != "__pycache__":
            (target / entry.name).symlink_to(entry)
    return target


def wait_for_nodes(box: Sandbox, config: Path, count: int, timeout: float) -> tuple[float, int]:
    """Poll Ray's own view of the cluster, from the head, until ``count`` nodes are alive: (seconds, nodes)."""
    probe = ("python -c \"import ray; ray.init(address='auto', logging_level='ERROR'); "
             "print('NODES', sum(n['Alive'] for n in ray.nodes()))\"")
    start = time.perf_counter()
    alive = 0
    while time.perf_counter() - start < timeout:
        done = box.on_laptop(["ray", "exec", str(config), probe], timeout=180)
        found = [int(text.split()[1]) for _, text in done.lines if re.fullmatch(r"NODES \d+", text.strip())]
        alive = found[-1] if found else 0
        if alive >= count:
            break
        time.sleep(3)
    return time.perf_counter() - start, alive


def worker_stages(box: Sandbox) -> dict[str, dict[str, float]]:
    """Each worker's set-up steps and their seconds, from the head's autoscaler log (the head sets the workers
    up, in parallel: its "NodeUpdater: <ip>: <step> [LogTimer=<ms>ms]" lines, in monitor.out)."""
    logs = sorted((box.nodes[0].root / "tmp/ray").glob("session_2*/logs/monitor.out"))
    text = logs[-1].read_text(errors="replace") if logs else ""
    found: dict[str, dict[str, float]] = {}
    for node in box.nodes[1:]:
        steps = re.findall(rf"NodeUpdater: {re.escape(node.ip)}: (.+?)\s+\[LogTimer=(\d+)ms\]", ANSI.sub("", text))
        found[node.name] = {step.strip(): round(int(ms) / 1e3, 1) for step, ms in steps}
    return found


def rehearse(workers: int = 2, image: str = "stock", wheelhouse: Path | None = None, seeds: int = 2,
             echo: bool = False, linger: float = 60.0, report_too: bool = True) -> dict:
    """The whole rehearsal (see the module's docstring), with ``biasgrid report`` on the laptop at the end when
    ``report_too``; returns what it measured. The sandbox is removed whatever happens; RuntimeError when a stage
    fails."""
    from storage.results import load

    report: dict = {"image": image, "workers": workers, "stages_s": {}}
    stages = report["stages_s"]
    box = Sandbox(workers)
    report["sandbox"] = {"namespaces": f"{box.tag}*", "folder": str(box.base)}
    try:
        if wheelhouse is None:
            wheelhouse = box.base / "wheels"
            stages["wheelhouse (laptop)"] = round(build_wheelhouse(wheelhouse, image), 1)
        site = prebuilt_site(box.base / "site") if image == "prebuilt" else None
        t = time.perf_counter()
        box.start(wheelhouse, site)
        stages["sandbox (namespaces, sshd)"] = round(time.perf_counter() - t, 1)
        head, *rest = box.nodes
        report["nodes"] = {n.name: n.ip for n in box.nodes}
        config = local_cluster(yaml.safe_load((REPO / "cluster.yaml").read_text()), head.ip,
                               [n.ip for n in rest], "root", str(box.key))
        checked(config)
        laptop = box.base / "laptop"
        config_file = laptop / "cluster.yaml"
        config_file.write_text(yaml.safe_dump(config, sort_keys=False))
        (laptop / "grid.toml").write_text(GRID.format(seeds=seeds))

        box.ray("get-auth-token", "--generate")
        up = box.ray("up", "-y", "--no-config-cache", str(config_file), echo=echo)
        stages["ray up (head)"] = round(up.seconds, 1)
        report["ray_up_stages_s"] = stage_times(up)
        seconds, alive = wait_for_nodes(box, config_file, workers + 1, timeout=900)
        stages["workers joined (after ray up)"] = round(seconds, 1)
        report["worker_stages_s"] = worker_stages(box)
        if alive < workers + 1:
            raise RuntimeError(f"only {alive} of {workers + 1} nodes joined within 900 s")
        refused = box.on_laptop(["ray", "exec", str(config_file), OLD_RECIPE])
        report["old_recipe_refused_pep668"] = refused.returncode != 0 and any(
            "externally-managed-environment" in text for _, text in refused.lines)
        stages["ray rsync-up grid.toml"] = round(
            box.ray("rsync-up", str(config_file), str(laptop / "grid.toml"), "~/grid.toml").seconds, 1)
        run = box.ray("exec", str(config_file),
                      "biasgrid run --address auto --config ~/grid.toml --out ~/results --quiet", echo=echo)
        stages["ray exec biasgrid run"] = round(run.seconds, 1)
        results = laptop / "results"
        stages["ray rsync-down results"] = round(
            box.ray("rsync-down", str(config_file), "~/results/", str(results)).seconds, 1)
        report["venv_has_ray_and_biasgrid"] = {
            n.name: all((n.home / VENV / "bin" / tool).exists() for tool in ("ray", "biasgrid"))
            and any((n.home / VENV / "lib").glob("python3*/site-packages/grid/__init__.py")) for n in box.nodes}
        if report_too:
            shown = box.on_laptop(["biasgrid", "report", str(results)])
            if shown.returncode != 0:
                raise RuntimeError(f"biasgrid report: exit {shown.returncode}\n{shown.text()}")
            stages["biasgrid report (laptop)"] = round(shown.seconds, 1)
        down = box.ray("down", "-y", str(config_file), echo=echo)
        stages["ray down"] = round(down.seconds, 1)

        acc = load(results)["accuracy"]
        report["accuracy_rows_per_node"] = dict(Counter(n.split("/")[0] for n in acc["node"]))
        ledger = [json.loads(p.read_text()) for p in (results / "_jobs").glob("*.json")]
        report["jobs_per_node"] = dict(Counter(r["node"].split("/")[0] for r in ledger))
        left = box.left_running()
        report["left_after_ray_down"] = {name: len(procs) for name, procs in left.items()}
        t = time.perf_counter()
        while linger and any(left.values()) and time.perf_counter() - t < linger:
            time.sleep(1)
            left = box.left_running()
        if linger:
            report[f"left_{linger:.0f}_s_later"] = {name: procs for name, procs in left.items() if procs}
            report["ended_by_itself_after_s"] = None if any(left.values()) else round(time.perf_counter() - t, 1)
        t = time.perf_counter()
        for node in rest:   # `ray down` stops the head only (README: end the workers' Ray); here by pid, never by name
            box.end_processes(node)
        stages["end each worker's Ray (by pid)"] = round(time.perf_counter() - t, 1)
        report["left_after_ending_workers_ray"] = {n: procs for n, procs in box.left_running().items() if procs}
    finally:
        t = time.perf_counter()
        report["teardown_problems"] = box.close()
        stages["teardown (processes, namespaces, folders)"] = round(time.perf_counter() - t, 1)
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=2, help="worker nodes besides the head")
    ap.add_argument("--image", choices=["stock", "prebuilt"], default="stock",
                    help="the nodes' Python without biasgrid's libraries (setup installs all) or with them")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--wheelhouse", type=Path, help="a folder of wheels for the nodes (default: made now)")
    ap.add_argument("--linger", type=float, default=60.0,
                    help="seconds to wait after `ray down` for the workers' Ray to end by itself (then ended by pid)")
    ap.add_argument("--echo", action="store_true", help="show the ray commands' output")
    ap.add_argument("--dry-run", action="store_true", help="print the generated config (checked by Ray) only")
    args = ap.parse_args()
    if args.dry_run:
        ips = [f"{NET}.{HEAD_HOST + i}" for i in range(args.workers + 1)]
        config = local_cluster(yaml.safe_load((REPO / "cluster.yaml").read_text()), ips[0], ips[1:], "root",
                               "/path/to/key")
        checked(config)
        print(yaml.safe_dump(config, sort_keys=False), end="")
        print(f"ok: cluster.yaml with the local provider passes Ray's validation ({args.workers} workers)")
        return
    hidden = [f for f in NODE_OWN if args.wheelhouse and args.wheelhouse.resolve().is_relative_to(f)]
    if hidden:
        print(f"--wheelhouse {args.wheelhouse} is under {hidden[0]}, which each node has of its own: the nodes "
              "would not see it (put it elsewhere, e.g. under /var/tmp)", file=sys.stderr)
        sys.exit(2)
    reason = unavailable(args.image)
    if reason:
        print(f"cannot rehearse here: {reason}", file=sys.stderr)
        sys.exit(3)
    print(f"load {os.getloadavg()[0]:.2f}; head + {args.workers} workers; {args.image} image", flush=True)
    report = rehearse(args.workers, args.image, args.wheelhouse, args.seeds, args.echo, args.linger)
    print(json.dumps(report, indent=1))
    every = len(report.get("jobs_per_node", {})) == args.workers + 1
    clean = not report["teardown_problems"] and not report.get("left_after_ending_workers_ray", True)
    sys.exit(0 if every and clean else 1)


if __name__ == "__main__":
    main()
