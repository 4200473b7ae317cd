"""Side-by-side proxy benchmark (routemaster-proxy vs nginx vs HAProxy), as a package.

The command-line entry is bench/bench.py (run through bench/run.sh). Modules, from the
bottom up:

- layout      file paths, CPU pinning, loopback ports, the proxies compared
- progress    the timestamped progress log on stderr and the run clock
- tools       locating external tools, their versions, the machine description
- procstats   CPU and memory accounting read from /proc
- servers     starting, checking and stopping the backend and the proxies
- scenarios   run settings, the load scenarios and the generated route tables
- loadgen     running wrk / h2load / oha and parsing their output
- phases      the measured phases of a run (scenarios, route tables, idle memory)
- formatting  how numbers are printed in the log and the Markdown tables
- report      RESULTS.md rendering (summaries of the raw results)
- mirror      the mirroring phase: a 100% compared mirror on vs off (RESULTS.mirror.md)
- profiling   the --profile mode (perf stat / perf record / strace -c) -> PROFILE.md
"""
