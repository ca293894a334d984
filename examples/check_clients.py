"""Runs the example clients against a real riskgate, as CI does.

    python examples/check_clients.py --riskgate target/debug/riskgate --client python
    python examples/check_clients.py --riskgate target/debug/riskgate --client node

Python stubs are generated from proto/ into a temporary directory first (grpcio-tools); the
Node client loads proto/ at run time. Checks, for the chosen client:
  - the bot places orders while the gate allows them, reports each with its permit, and stops
    placing once its failures open the breaker;
  - with the gate unreachable, the bot places nothing (fail closed);
  - the monitor follows events, resumes after the server restarts without missing or repeating
    one, and reads the snapshot again when the server's history no longer covers its place;
  - given every node of a two-node cluster (on a one-member etcd), standby first, the bot
    follows `riskgate-leader` and places its orders. Skipped when etcd is not installed or the
    binary was built without the cluster feature, unless RISKGATE_REQUIRE_ETCD=1.
"""

import argparse
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PATIENCE = 30


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def lines_of(stream):
    q = queue.Queue()

    def pump():
        for line in iter(stream.readline, ""):
            q.put(line.rstrip("\n"))
        q.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return q


def wait_for(q, needle, what):
    deadline = time.time() + PATIENCE
    seen = []
    while time.time() < deadline:
        try:
            line = q.get(timeout=max(0.1, deadline - time.time()))
        except queue.Empty:
            break
        if line is None:
            break
        seen.append(line)
        if needle in line:
            return line
    sys.exit(f"FAIL: {what}: no line with {needle!r}; saw {seen}")


class Server:
    def __init__(self, riskgate, port, env):
        self.riskgate, self.port, self.env = riskgate, port, env
        self.process = None

    def start(self):
        env = dict(os.environ, RISKGATE__SERVER__LISTEN=f"127.0.0.1:{self.port}", **self.env)
        self.process = subprocess.Popen(
            [self.riskgate, "serve"], env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
        )
        wait_for(lines_of(self.process.stderr), "riskgate serving", "riskgate start")

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=PATIENCE)


def check_cluster(riskgate, client, env, work):
    """The bot, given a standby and the leader, follows the leader."""
    required = os.environ.get("RISKGATE_REQUIRE_ETCD") == "1"
    etcd = shutil.which("etcd")
    if etcd is None:
        assert not required, "etcd is not installed and RISKGATE_REQUIRE_ETCD=1"
        print("SKIPPED: cluster client check (etcd not installed: apt-get install etcd-server)")
        return
    client_port, peer_port = free_port(), free_port()
    etcd_process = subprocess.Popen(
        [etcd, "--name", "m0", "--data-dir", os.path.join(work, "etcd"),
         "--listen-client-urls", f"http://127.0.0.1:{client_port}",
         "--advertise-client-urls", f"http://127.0.0.1:{client_port}",
         "--listen-peer-urls", f"http://127.0.0.1:{peer_port}",
         "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer_port}",
         "--initial-cluster", f"m0=http://127.0.0.1:{peer_port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    nodes = []
    try:
        addrs = []
        for name in ("node-a", "node-b"):
            port = free_port()
            addr = f"127.0.0.1:{port}"
            config = os.path.join(work, f"{name}.toml")
            with open(config, "w") as f:
                f.write(f'[server]\nlisten = "{addr}"\n[cluster]\n'
                        f'etcd_endpoints = ["http://127.0.0.1:{client_port}"]\n'
                        f'node_id = "{name}"\nadvertise = "{addr}"\nlease_secs = 2\n'
                        f'key_prefix = "/clients-{client}"\n')
            process = subprocess.Popen([riskgate, "serve", "--config", config],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            nodes.append(process)
            output = lines_of(process.stderr)
            line = wait_for(output, "riskgate", f"{name} start")
            while "riskgate serving" not in line:
                if "built without cluster mode" in line:
                    assert not required, "the binary has no cluster feature and RISKGATE_REQUIRE_ETCD=1"
                    print("SKIPPED: cluster client check (riskgate built without --features cluster)")
                    return
                line = output.get(timeout=PATIENCE) or ""
            addrs.append(addr)
            if name == "node-a":
                deadline = time.time() + PATIENCE
                while subprocess.run([riskgate, "health", "--service", "riskgate.v1.GateService",
                                      "--addr", addr], capture_output=True).returncode != 0:
                    assert time.time() < deadline, "node-a never led"
                    time.sleep(0.1)
        out = subprocess.run(
            client_command(client, "bot", work)
            + ["--addr", f"{addrs[1]},{addrs[0]}", "--account", f"{client}-cluster", "--orders", "5",
               "--deadline-ms", "2000"],
            env=env, capture_output=True, text=True, timeout=PATIENCE, check=True,
        ).stdout.splitlines()
        summary = json.loads(out[-1])
        assert summary["placed"] == 5 and summary["unreported"] == 0, (summary, out)
        print(f"ok: {client} bot given a standby first followed riskgate-leader: {summary}")
    finally:
        for process in nodes:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=PATIENCE)
        etcd_process.kill()
        etcd_process.wait()


def client_command(client, script, gen):
    if client == "python":
        return [sys.executable, os.path.join(HERE, "python", f"{script}.py")]
    return ["node", os.path.join(HERE, "node", f"{script}.js")]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--riskgate", required=True)
    parser.add_argument("--client", choices=["python", "node"], required=True)
    args = parser.parse_args()
    riskgate = os.path.abspath(args.riskgate)
    work = tempfile.mkdtemp(prefix="riskgate-clients-")
    env = dict(os.environ)
    try:
        if args.client == "python":
            gen = os.path.join(work, "gen")
            os.makedirs(gen)
            subprocess.run(
                [sys.executable, "-m", "grpc_tools.protoc", "-I", os.path.join(ROOT, "proto"),
                 f"--python_out={gen}", f"--grpc_python_out={gen}",
                 os.path.join(ROOT, "proto", "riskgate", "v1", "riskgate.proto")],
                check=True,
            )
            env["RISKGATE_PY_GEN"] = gen
        else:
            env["RISKGATE_PROTO_DIR"] = os.path.join(ROOT, "proto")
        port = free_port()
        addr = f"127.0.0.1:{port}"
        server = Server(riskgate, port, {
            "RISKGATE__STORE__PATH": os.path.join(work, "data"),
            "RISKGATE__BREAKER__FAILURE_THRESHOLD": "3",
        })
        server.start()

        # The bot stops placing orders once its breaker opens.
        bot = client_command(args.client, "bot", work)
        out = subprocess.run(
            bot + ["--addr", addr, "--account", f"{args.client}-bot", "--orders", "20", "--fail-every", "2",
                   "--deadline-ms", "2000"],
            env=env, capture_output=True, text=True, timeout=PATIENCE, check=True,
        ).stdout.splitlines()
        summary = json.loads(out[-1])
        assert summary["placed"] == 6 and summary["failed"] == 3, summary
        assert summary["not_placed"] == 14 and summary["unreported"] == 0, summary
        assert any("breaker open" in line for line in out), out
        print(f"ok: {args.client} bot stopped after its breaker opened: {summary}")

        # Fail closed: an unreachable gate places nothing.
        out = subprocess.run(
            bot + ["--addr", f"127.0.0.1:{free_port()}", "--account", "nobody", "--orders", "3"],
            env=env, capture_output=True, text=True, timeout=PATIENCE, check=True,
        ).stdout.splitlines()
        summary = json.loads(out[-1])
        assert summary["placed"] == 0 and summary["not_placed"] == 3, summary
        print(f"ok: {args.client} bot placed nothing with the gate unreachable: {summary}")

        # The monitor: snapshot, live, resume across a restart, snapshot again after OUT_OF_RANGE.
        monitor = subprocess.Popen(
            client_command(args.client, "monitor", work) + ["--addr", addr],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        watched = lines_of(monitor.stdout)
        wait_for(watched, "snapshot 1 breakers as of 1", "monitor snapshot")
        trip = [riskgate, "trip", "--addr", f"http://{addr}", "--reason", "client check",
                "--operator", "client-check", "--new"]
        subprocess.run(trip + ["mon-1"], check=True, capture_output=True)
        wait_for(watched, "event 2 mon-1 BREAKER_STATE_CLOSED -> BREAKER_STATE_OPEN", "live event")
        server.stop()
        server.start()  # same store: the history continues
        subprocess.run(trip + ["mon-2"], check=True, capture_output=True)
        line = wait_for(watched, "event ", "event after restart")
        assert line.startswith("event 3 mon-2"), f"resumed without a gap or a repeat: {line}"
        server.stop()
        shutil.rmtree(os.path.join(work, "data"))
        server.start()  # a new, empty store: the monitor's place is ahead of its history
        wait_for(watched, "reading the snapshot again", "OUT_OF_RANGE handling")
        wait_for(watched, "snapshot 0 breakers as of 0", "snapshot re-read")
        subprocess.run(trip + ["mon-3"], check=True, capture_output=True)
        wait_for(watched, "event 1 mon-3", "event after re-reading the snapshot")
        monitor.terminate()
        monitor.wait(timeout=PATIENCE)
        server.stop()
        print(f"ok: {args.client} monitor resumed across a restart and re-read the snapshot")

        check_cluster(riskgate, args.client, env, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
