"""bench-rm: throughput and latency of a reward server (or any reward source) under load.

workload.py builds the requests, http.py is the lean keep-alive client, targets.py puts an HTTP server and an
in-process source behind one `send`, spawn.py starts serve-rm for a run, loadgen.py drives one concurrency level,
stats.py turns outcomes into figures, runner.py sweeps the levels, report.py and plot.py show them.
"""
