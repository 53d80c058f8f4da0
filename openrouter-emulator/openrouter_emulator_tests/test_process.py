"""Starting and stopping the emulator process: taken ports are retried, a silent child is killed, the log
explains a failed start, and `stop()` leaves nothing running."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from openrouter_emulator import process
from openrouter_emulator.process import EmulatorStartError, start_emulator


def answers(port: int) -> bool:
    """True if something accepts connections on the loopback port."""
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def taken_port() -> Iterator[socket.socket]:
    """A loopback port held by this process, bound but not listening, so only binding it fails."""
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    try:
        yield holder
    finally:
        holder.close()


def first_port_is(monkeypatch: pytest.MonkeyPatch, port: int) -> list[int]:
    """Make the next free-port probe answer `port`, then real free ports; the ports handed out."""
    real = process._free_port
    handed: list[int] = []

    def probe() -> int:
        handed.append(port if not handed else real())
        return handed[-1]

    monkeypatch.setattr(process, "_free_port", probe)
    return handed


def test_a_port_another_server_listens_on_is_skipped(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                     taken_port: socket.socket) -> None:
    taken_port.listen()
    handed = first_port_is(monkeypatch, taken_port.getsockname()[1])
    emulator = start_emulator(generations_per_day=10, days=1, log_path=tmp_path / "emu.log")
    try:
        assert len(handed) == 2 and emulator.base_url.startswith(f"http://127.0.0.1:{handed[1]}/")
        assert emulator.config()
    finally:
        emulator.stop()


def test_a_port_taken_before_the_child_binds_it_is_retried(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                           taken_port: socket.socket) -> None:
    handed = first_port_is(monkeypatch, taken_port.getsockname()[1])
    emulator = start_emulator(generations_per_day=10, days=1, log_path=tmp_path / "emu.log")
    try:
        assert len(handed) == 2 and emulator.running
        assert "address already in use" in emulator.log_path.read_text()
    finally:
        emulator.stop()


def test_a_child_that_never_answers_is_killed_and_its_log_shown(monkeypatch: pytest.MonkeyPatch,
                                                                tmp_path: Path) -> None:
    """`--port` given twice: the child listens on the second, the readiness poll asks the first."""
    monkeypatch.setattr(process, "STARTUP_TIMEOUT_S", 5.0)  # an emulator of 10 generations starts in ~0.5 s
    elsewhere = process._free_port()
    with pytest.raises(EmulatorStartError, match="did not answer within 5s") as failure:
        start_emulator(generations_per_day=10, days=1, extra_args=["--port", str(elsewhere)],
                       log_path=tmp_path / "silent.log")
    assert f"listening on http://127.0.0.1:{elsewhere}/" in str(failure.value)  # the log tail
    assert not answers(elsewhere)
    assert "stopped" not in (tmp_path / "silent.log").read_text()  # SIGKILLed, not shut down


def test_stop_ends_the_process_and_can_be_called_twice(tmp_path: Path) -> None:
    emulator = start_emulator(generations_per_day=10, days=1, log_path=tmp_path / "emu.log")
    port = int(emulator.control_url.split(":")[2].split("/")[0])
    assert emulator.running and emulator.pid and answers(port)
    emulator.stop()
    emulator.stop()
    assert not emulator.running and emulator.pid is None and not answers(port)
    assert emulator.log_path.read_text().rstrip().endswith("OpenRouter emulator stopped")  # a clean SIGTERM exit
