"""befriend benchmarks: each ``bench_*.py`` module has a ``main()`` printing absolute figures
and the ratio against a baseline measured in the same run."""
