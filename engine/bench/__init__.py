"""``s2s-engine bench``: the engine's benchmarks, one module a job.

    s2s-engine bench latency [--profile P] [--set k=v]... [--turns N] [--reply MODE] [--cpu-load N] [--json OUT] FILES...
    s2s-engine bench turn / make-wavs ...          end-of-turn signals (engine/bench/turn.py)
    s2s-engine bench capacity ...                  concurrent sessions within a bound (engine/bench/capacity.py)
    s2s-engine bench make-models --out DIR [--small] [--asr-tokens N]
    s2s-engine bench asr SET... / bench asr-set OUT   (engine/bench/asr.py)
    s2s-engine bench wire [--turns N] [--json OUT] in-process vs WebSocket (remote/bench.py)
    s2s-engine bench soak ...                      many users for a long time (remote/soak/)

- :mod:`engine.bench.cli`: the command line (argparse wiring), ``bench latency`` and ``bench
  make-models``; ``python -m engine.bench ...`` runs it;
- :mod:`engine.bench.common`: what every bench command shares (the common arguments, ``--reply``,
  the JSON report), also for the commands registered from above the engine;
- :mod:`engine.bench.llm`: the model wrappers (reproducible LLM calls, the scripted reply, the
  ASR audio kept);
- :mod:`engine.bench.latency`: the runs of ``bench latency`` ((a) streaming, (b) cascade,
  (c) compute floor; the module docstring says how) and their summary;
- :mod:`engine.bench.stats`: distributions and the machine;
- :mod:`engine.bench.render`: the tables of ``bench latency``;
- :mod:`engine.bench.turn`: ``bench turn`` and ``bench make-wavs`` (end-of-turn signals);
- :mod:`engine.bench.capacity`: ``bench capacity``;
- :mod:`engine.bench.asr`: ``bench asr`` and ``bench asr-set``;
- :mod:`remote.bench` (``bench wire``) and :mod:`remote.soak` (``bench soak``), registered by the
  ``s2s-engine`` entry point (:mod:`remote.cli`), since the engine imports nothing from ``remote/``;
- :mod:`engine.shape_models`: ``bench make-models``, shape-true random-weight models of the gpu profile.

The package itself imports nothing, so ``engine.bench.stats`` (say) does not load the command line.
"""
