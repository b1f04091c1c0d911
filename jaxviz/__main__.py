"""``python -m jaxviz``: the ``jaxviz`` command (:mod:`jaxviz.cli`)."""

from jaxviz.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
