"""Type stubs for fastfid._simt: fastfid._cuda's interface with the kernels run by the SIMT
emulation (csrc/simt) on host memory addresses. For tests."""

from fastfid._cuda import (
    NewtonSchulzInfo as NewtonSchulzInfo,
    accumulate as accumulate,
    merge as merge,
    newton_schulz as newton_schulz,
    newton_schulz_workspace_doubles as newton_schulz_workspace_doubles,
    stats_workspace_doubles as stats_workspace_doubles,
)

def set_schedule(order: str) -> None: ...
def _selftest_divergent_barrier() -> None: ...
def _selftest_missing_barrier(mark: int) -> list[int]: ...
