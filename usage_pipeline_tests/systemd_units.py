"""The units of `deploy/systemd/` read and started as systemd would, so the tests run the very command line a
deployment runs, not one written again beside it.

A unit is parsed strictly: where systemd warns about an unknown section or key and goes on, this refuses it, and
it refuses the syntax it does not read (quotes, backslashes, line continuations, ExecStart prefixes) rather than
read it differently from systemd. Then, as systemd does: the specifiers are expanded (`%i`, `%n`, `%p`, `%%`), the
`EnvironmentFile=` files are loaded in order (the later wins), `${VAR}` and `$VAR` are expanded in `ExecStart=`
(systemd.service(5), "Command lines"), the command runs with no shell in `WorkingDirectory=` with only that
environment and systemd's PATH, under `UMask=`, in a process group of its own (KillMode=control-group signals
every process of the unit), is stopped with `KillSignal=` and killed after `TimeoutStopSec=`, and its exit is
judged by `Restart=` and `RestartPreventExitStatus=`.

The absolute paths a unit names (its command, environment files, working and state directories) are taken
under a temporary root, as `systemd-analyze --root` takes them: the test installs there what an operator
installs. One variable of the test's own reaches the command, PYTHONPATH, when set: it makes the console
script import this checkout, as a deployment's venv imports its installed copy.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
UNITS = ROOT / "deploy" / "systemd"
SYSTEMD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin"  # a system service's PATH (systemd.exec(5))
PASSED_THROUGH = ("PYTHONPATH",)
# What the units may say: the keys this module acts on, and the ones it only accepts (systemd acts on them; a
# test process cannot: User=, the sandboxing, restart timing, ordering, the start limit).
KEYS = {
    "Unit": {"Description", "Wants", "After", "StartLimitIntervalSec"},
    "Service": {"Type", "User", "Group", "WorkingDirectory", "EnvironmentFile", "ExecStart", "KillSignal",
                "TimeoutStopSec", "Restart", "RestartSec", "RestartPreventExitStatus", "UMask", "NoNewPrivileges",
                "ProtectSystem", "ProtectHome", "PrivateTmp", "StateDirectory", "StateDirectoryMode"},
    "Install": {"WantedBy"},
}
REPEATABLE = {"Wants", "After", "EnvironmentFile", "RestartPreventExitStatus", "WantedBy"}
CLEAN_SIGNALS = {signal.SIGHUP, signal.SIGINT, signal.SIGTERM, signal.SIGPIPE}  # a clean exit (not oneshot)
_NAME = r"[A-Za-z_][A-Za-z0-9_]*"


class UnitError(ValueError):
    """A unit or environment file this module will not read as systemd would: it names the file and line."""


@dataclass(frozen=True)
class Unit:
    name: str  # the instance, e.g. usage-receive@acme.service
    keys: dict[tuple[str, str], list[str]]  # (section, key) -> values, specifiers expanded, in file order

    def __repr__(self) -> str:
        return f"Unit({self.name})"

    def all(self, section: str, key: str) -> list[str]:
        return self.keys.get((section, key), [])

    def one(self, section: str, key: str, default: str | None = None) -> str:
        values = self.all(section, key)
        if not values:
            if default is None:
                raise UnitError(f"{self.name}: no {key}= in [{section}]")
            return default
        return values[0]


def read_unit(template: Path, instance: str) -> Unit:
    """The template unit `template` (`name@.service`) as instance `instance`, parsed strictly."""
    prefix, at, suffix = template.name.partition("@")
    if at != "@" or not suffix.startswith("."):
        raise UnitError(f"{template.name} is not a template unit (name@.type)")
    name = f"{prefix}@{instance}{suffix}"
    keys: dict[tuple[str, str], list[str]] = {}
    section = None
    for number, line in enumerate(template.read_text(encoding="utf-8").splitlines(), 1):
        where = f"{template.name}:{number}"
        text = line.strip()
        if not text or text[0] in "#;":
            continue
        if text.endswith("\\"):
            raise UnitError(f"{where}: a continued line")
        if text.startswith("["):
            section = text.removeprefix("[").removesuffix("]")
            if text != f"[{section}]" or section not in KEYS:
                raise UnitError(f"{where}: section {text} (known: {sorted(KEYS)})")
            continue
        key, equals, value = (part.strip() for part in text.partition("="))
        if section is None or not equals or key not in KEYS[section]:
            raise UnitError(f"{where}: {key!r} is no key of [{section}] this module knows")
        if not value:
            raise UnitError(f"{where}: an empty {key}= (it resets a list in systemd)")
        if (section, key) in keys and key not in REPEATABLE:
            raise UnitError(f"{where}: {key}= given twice")
        keys.setdefault((section, key), []).append(specifiers(value, name, where))
    return Unit(name, keys)


def specifiers(value: str, unit_name: str, where: str) -> str:
    """`%i` (the instance, as written), `%n` (the full name), `%p` (the prefix) and `%%`; any other refused."""
    prefix, _, rest = unit_name.partition("@")
    known = {"i": rest.rpartition(".")[0], "n": unit_name, "p": prefix, "%": "%"}

    def expand(match: re.Match[str]) -> str:
        if match.group(1) not in known:
            raise UnitError(f"{where}: specifier %{match.group(1)} is not read here")
        return known[match.group(1)]

    return re.sub(r"%(.?)", expand, value)


def environment_file(path: Path) -> dict[str, str]:
    """The NAME=value lines of an EnvironmentFile= (comments `#` and `;` on lines of their own). systemd would
    also unquote and unescape values, and skip a line without `=`: such lines are refused here."""
    found: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.lstrip()[0] in "#;":
            continue
        name, equals, value = line.partition("=")
        if not equals or not re.fullmatch(_NAME, name) or value != value.strip() or re.search(r"[\"'\\]", value):
            raise UnitError(f"{path.name}:{number}: not a plain NAME=value line")
        found[name] = value
    return found


def command_line(exec_start: str, environment: Mapping[str, str]) -> list[str]:
    """ExecStart= as argv: split at whitespace, then a word that is exactly `$NAME` becomes the variable's value
    split at whitespace (no word when unset), `${NAME}` within a word its exact value ("" when unset), `$$` a
    `$`. Quotes, backslashes, `;` and ExecStart prefixes are refused."""
    if re.search(r"[\"'\\]", exec_start):
        raise UnitError(f"ExecStart={exec_start}: quotes and backslashes are not read here")
    words = exec_start.split()
    if not words or words[0][0] in "@-:+!" or ";" in words:
        raise UnitError(f"ExecStart={exec_start}: a prefix or a second command")
    argv: list[str] = []
    for word in words:
        if re.fullmatch(rf"\${_NAME}", word):
            argv.extend(environment.get(word[1:], "").split())
            continue
        rest = re.sub(r"\$\{(" + _NAME + r")\}", lambda m: environment.get(m.group(1), "").replace("$", "\0"), word)
        if "$" in rest.replace("$$", ""):
            raise UnitError(f"ExecStart={exec_start}: {word!r} holds a $ that is not read here")
        argv.append(rest.replace("$$", "$").replace("\0", "$"))
    return argv


def under(root: Path, path: str) -> Path:
    """An absolute path the unit names, inside the test's root."""
    if not path.startswith("/"):
        raise UnitError(f"{path!r} is not an absolute path")
    return root / path.lstrip("/")


def environment(unit: Unit, root: Path) -> dict[str, str]:
    """What the unit's command runs with: systemd's PATH, the test's PYTHONPATH, then each EnvironmentFile=."""
    env = {"PATH": SYSTEMD_PATH, **{name: os.environ[name] for name in PASSED_THROUGH if name in os.environ}}
    for path in unit.all("Service", "EnvironmentFile"):
        env.update(environment_file(under(root, path)))  # no `-` prefix: a missing file fails the start
    return env


@dataclass
class Service:
    unit: Unit
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> int | str:
        """Stop it as `systemctl stop` does: KillSignal= to every process of the unit, then SIGKILL after
        TimeoutStopSec=. The exit status, or "timeout" when it had to be killed."""
        if self.process.poll() is not None:
            return self.process.returncode
        os.killpg(self.process.pid, signal.Signals[self.unit.one("Service", "KillSignal", "SIGTERM")])
        try:
            return self.process.wait(timeout=float(self.unit.one("Service", "TimeoutStopSec")))
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            return "timeout"

    def said(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")


@contextmanager
def started(unit: Unit, root: Path, log: Path) -> Iterator[Service]:
    """The unit's ExecStart= running (Type=exec: started once the command is executed); killed on the way out
    if the test left it running."""
    env = environment(unit, root)
    argv = command_line(unit.one("Service", "ExecStart"), env)
    argv[0] = str(under(root, argv[0]))
    workdir = under(root, unit.one("Service", "WorkingDirectory"))
    with log.open("ab") as out:
        process = subprocess.Popen(argv, env=env, cwd=workdir, stdin=subprocess.DEVNULL, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True,
                                   umask=int(unit.one("Service", "UMask", "0022"), 8))
    service = Service(unit, process, log)
    try:
        yield service
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _statuses(unit: Unit, key: str) -> set[int]:
    """Exit statuses and signals (as Popen's negative returncodes) a list such as RestartPreventExitStatus= names."""
    found = set()
    for value in unit.all("Service", key):
        for word in value.split():
            found.add(int(word) if word.isdigit() else -signal.Signals[word])
    return found


def exits_cleanly(unit: Unit, returncode: int | str) -> bool:
    """What systemd counts as a successful exit (not Type=oneshot): 0 or a clean signal (no SuccessExitStatus=)."""
    if unit.one("Service", "Type", "simple") == "oneshot":
        raise UnitError("oneshot services are judged differently")
    return returncode == 0 or (isinstance(returncode, int) and -returncode in CLEAN_SIGNALS)


def restarts(unit: Unit, returncode: int | str) -> bool:
    """Whether systemd restarts the unit after its process ended so, unasked (no `systemctl stop`)."""
    if isinstance(returncode, int) and returncode in _statuses(unit, "RestartPreventExitStatus"):
        return False
    restart = unit.one("Service", "Restart", "no")
    if restart not in ("no", "on-failure", "always"):
        raise UnitError(f"Restart={restart} is not judged here")
    return restart == "always" or (restart == "on-failure" and not exits_cleanly(unit, returncode))
