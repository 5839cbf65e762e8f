"""``python -m engine.bench ...``: the engine's ``s2s-engine bench`` commands (not ``wire`` or ``soak``)."""

from engine.bench.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
