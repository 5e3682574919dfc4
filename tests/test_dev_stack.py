"""scripts/dev-stack's promises, checked: the printout's commands are run as printed and must
give the answers it states; a taken port and a failed start are each said in one line."""

import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

from stack import ROOT, free_port

DEV_STACK = [sys.executable, str(ROOT / "tests" / "dev_stack.py")]


def start(port: int, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([*DEV_STACK, "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, **(env or {})})


def read_printout(process: subprocess.Popen, timeout: float = 90) -> str:
    lines, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            raise AssertionError(f"dev-stack ended: {process.stderr.read()}")
        lines.append(line)
        if line.startswith("Ctrl-C to stop."):
            return "".join(lines)
    raise AssertionError("no printout in time")


@pytest.fixture(scope="module")
def running():
    port = free_port()
    process = start(port)
    try:
        yield port, read_printout(process)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def claims(printout: str) -> list[tuple[str, str]]:
    """(command, answer) for every printed line ending in `# -> answer`."""
    found = []
    for line in printout.splitlines():
        match = re.match(r"^\s+(.*?)\s+# -> (.+)$", line)
        if match:
            found.append((match.group(1), match.group(2).strip()))
    return found


def test_every_printed_command_gives_the_printed_answer(running):
    port, printout = running
    directory = re.search(r"^\s+D=(\S+)$", printout, re.M).group(1)
    found = claims(printout)
    assert len(found) >= 12, printout
    for command, answer in found:
        result = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=30,
                                env={**os.environ, "D": directory})
        if answer.startswith("exit "):
            assert result.returncode == int(answer.split()[1]), (command, result.stdout, result.stderr)
        elif command.startswith("curl"):
            assert result.stdout.strip() == answer, (command, result.stdout, result.stderr)
        else:
            assert result.stdout.rstrip().endswith(f"HTTP {answer}"), (command, result.stdout, result.stderr)
    # Tokens are in files, not in the printout; lines stay short enough to copy.
    assert not re.search(r"eyJ[\w-]{40,}", printout)
    assert max(len(line) for line in printout.splitlines()) < 200


def test_a_taken_port_is_refused_in_one_line_naming_the_holder(running):
    port, _ = running
    second = start(port)
    _, err = second.communicate(timeout=30)
    assert second.returncode == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and f"port {port} is in use by pid" in lines[0], err


def test_a_failed_start_says_authzs_own_error():
    with socket.socket() as s:  # a free port the stack may take
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = start(port, env={"AUTHZ_CACHE__ALLOW_TTL": "soon"})
    _, err = process.communicate(timeout=90)
    assert process.returncode == 1
    assert "config: cache.allow_ttl:" in err, err
    assert "Traceback" not in err
    workdir = re.search(r"logs in (\S+)\)", err).group(1)
    assert pathlib.Path(workdir).is_dir()
