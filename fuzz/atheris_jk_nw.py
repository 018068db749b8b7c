"""Coverage-guided fuzz of the JK NW decoder, by hand (atheris is not a dependency):

    .venv/bin/pip install atheris && .venv/bin/python fuzz/atheris_jk_nw.py fuzz/corpus/jk_nw -max_total_time=600

Any exception other than FrameError out of decode + model mapping is a finding.
"""

import contextlib
import sys

import atheris  # type: ignore[import-not-found]

with atheris.instrument_imports():
    from gateway.bms import jk_nw
    from gateway.errors import FrameError


def one_input(data: bytes) -> None:
    with contextlib.suppress(FrameError):
        jk_nw.to_reading(jk_nw.decode_reply(data), 0.0, "atheris").to_json()


if __name__ == "__main__":
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
