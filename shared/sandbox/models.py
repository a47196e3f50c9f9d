"""What goes into a run and what comes out: limits, run results, judgements."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from lorafleet.shared.problems import Limits

RunVerdict = Literal["ok", "time_limit", "memory_limit", "runtime_error", "output_limit", "sandbox_error"]
JudgeVerdict = Literal[
    "passed", "wrong_answer", "time_limit", "memory_limit", "runtime_error", "output_limit", "sandbox_error"
]

# Every layer the sandbox can put around a run; `require_isolation` demands all of them but one of each
# ALTERNATIVES pair (see missing_layers).
ALL_LAYERS = (
    "process_group",
    "pid_namespace",
    "net_namespace",
    "mount_namespace",
    "private_root",
    "ipc_namespace",
    "uts_namespace",
    "private_tmp",
    "uid_drop",
    "user_namespace",
    "no_new_privs",
    "seccomp",
    "clean_env",
    "private_workdir",
    "rlimits",
    "wall_clock",
    "output_cap",
    "memory_address_space",
)
# Root mode runs a program as a uid of its own (uid_drop); rootless mode as the caller's uid mapped to root
# of a user namespace, with no capabilities, the private root and pid namespace hiding the caller's data.
ALTERNATIVES = (("uid_drop", "user_namespace"),)
# Without these the sandbox is in its reduced mode: refused unless LORAFLEET_SANDBOX_ALLOW_REDUCED=1.
NAMESPACE_LAYERS = ("pid_namespace", "net_namespace", "mount_namespace", "private_root", "private_tmp")


def missing_layers(layers: list[str] | tuple[str, ...]) -> list[str]:
    """The layers `require_isolation` asks for that are not in `layers` (an alternative pair as `a|b`)."""
    have = set(layers)
    paired = {x for pair in ALTERNATIVES for x in pair}
    missing = [x for x in ALL_LAYERS if x not in paired and x not in have]
    return missing + ["|".join(pair) for pair in ALTERNATIVES if not have & set(pair)]


def reduced(layers: list[str] | tuple[str, ...]) -> list[str]:
    """What makes a server's mode reduced: missing namespace layers, or neither uid drop nor user namespace."""
    have = set(layers)
    return [x for x in NAMESPACE_LAYERS if x not in have] + ["|".join(p) for p in ALTERNATIVES if not have & set(p)]

MiB = 1024 * 1024
# A run may idle (sleep, wait for input or a lock) this long past its CPU time limit: the wall time it
# gets, not counting time it spent runnable but waiting for a CPU (the machine's load, not the program).
IDLE_SLACK_S = 0.3
# The wall-clock ceiling whatever the load (a run starved of CPU can't hold its server for ever).
CEILING_FACTOR, CEILING_EXTRA_S = 3, 5.0


class RunLimits(BaseModel):
    """Limits of one run. CPU time is the verdict's clock. A run that idles (sleeps, waits) is stopped once
    its wall time, less the time it spent waiting for a CPU, passes time_s + IDLE_SLACK_S (`idle_s`);
    `wall_s` is a plain wall-clock ceiling on top."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    time_s: float = Field(default=4.0, gt=0, le=600, description="CPU seconds (RLIMIT_CPU plus a measured check)")
    wall_s: float | None = Field(default=None, gt=0, le=1200,
                                 description="wall-clock ceiling whatever the load; default 3 x time_s + 5")
    idle_slack_s: float = Field(default=IDLE_SLACK_S, ge=0, le=60,
                                description="how long past time_s a run may idle (see idle_s)")
    memory_mb: int = Field(default=512, ge=32, le=65536, description="address space per process (RLIMIT_AS; "
                           "thread stacks and malloc arenas sized so that 16 threads fit in 256 MiB)")
    output_bytes: int = Field(default=4 * MiB, ge=1024, description="stdout cap, enforced while reading")
    stderr_bytes: int = Field(default=256 * 1024, ge=1024, description="stderr cap, enforced while reading")
    file_size_mb: int = Field(default=64, ge=1, description="largest file the program may write (RLIMIT_FSIZE)")
    open_files: int = Field(default=64, ge=16, description="RLIMIT_NOFILE")
    processes: int = Field(default=16, ge=2, description="processes + threads of the run (RLIMIT_NPROC)")
    require_isolation: bool = Field(default=False, description="refuse to run unless every isolation layer is active")

    @classmethod
    def from_problem(cls, limits: Limits | None, **overrides: object) -> RunLimits:
        if limits is None:
            return cls(**overrides)  # type: ignore[arg-type]
        return cls(time_s=limits.time_s, memory_mb=limits.memory_mb, **overrides)  # type: ignore[arg-type]

    @property
    def effective_wall_s(self) -> float:
        return self.wall_s if self.wall_s is not None else CEILING_FACTOR * self.time_s + CEILING_EXTRA_S

    @property
    def idle_s(self) -> float:
        """Wall time not spent waiting for a CPU that a run may take: time_s + idle_slack_s."""
        return self.time_s + self.idle_slack_s

    def for_tests(self, n: int) -> RunLimits:
        """The limits of one run that holds n tests (call tests run together): each limit n times over.
        The driver enforces each test's own share (see _runner._run_calls)."""
        if n <= 1:
            return self
        return self.model_copy(update={"time_s": n * self.time_s, "idle_slack_s": n * self.idle_slack_s,
                                       "wall_s": n * self.effective_wall_s})

    def wire(self) -> dict:
        return {
            "cpu_s": self.time_s,
            "idle_s": self.idle_s,
            "wall_s": self.effective_wall_s,
            "memory_bytes": self.memory_mb * MiB,
            "fsize_bytes": self.file_size_mb * MiB,
            "nofile": self.open_files,
            "nproc": self.processes,
            "stdout_cap": self.output_bytes,
            "stderr_cap": self.stderr_bytes,
        }


class RunResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    verdict: RunVerdict
    exit_code: int | None = None
    signal: int | None = None
    stdout: str = ""
    stderr: str = ""
    wall_ms: float = 0.0
    cpu_ms: float = 0.0
    max_rss_kb: int = 0
    isolation: list[str] = Field(default_factory=list)
    detail: str = ""
    stdout_truncated: bool = False
    stderr_truncated: bool = False

    def public(self) -> dict:
        """The JSON object `lorafleet sandbox run --json` prints (exactly these keys)."""
        return self.model_dump(include={"verdict", "exit_code", "stdout", "stderr", "wall_ms", "cpu_ms", "isolation"})


class Judgement(BaseModel):
    model_config = ConfigDict(extra="forbid")

    verdict: JudgeVerdict
    passed_tests: int
    total_tests: int
    detail: str = ""
    wall_ms: float = 0.0
    cpu_ms: float = 0.0
    failed_test: int | None = Field(default=None, description="index of the first failing test")
    isolation: list[str] = Field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.verdict == "passed"
