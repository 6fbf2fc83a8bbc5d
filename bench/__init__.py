"""supportbot's benchmark suite: ``python -m bench [NAME ...] [--quick]``.

Each benchmark is a module with ``NAME`` and ``run(quick) -> list[dict]``; see BENCHMARKS.md.
"""
