"""The local backend takes a Ctrl-C between two reports: SIGINT only notes it, and the driver stops at its
next poll (what the study does then is tests/study/test_faults.py's Ctrl-C test). Where SIGINT is ignored (a
background job) it stays ignored."""

from __future__ import annotations

import os
import signal
import time

from scalekit.study.backend.local import _interrupt_at_polls


def test_sigint_is_noted_and_raised_at_the_next_poll_only() -> None:
    outer = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal
    try:
        with _interrupt_at_polls() as interrupted:
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(100):  # the handler runs in this thread between two bytecodes
                if interrupted.is_set():
                    break
                time.sleep(0.01)
            assert interrupted.is_set()  # and no KeyboardInterrupt reached this block
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a background job
        with _interrupt_at_polls() as interrupted:
            assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
        assert not interrupted.is_set()
    finally:
        signal.signal(signal.SIGINT, outer)
