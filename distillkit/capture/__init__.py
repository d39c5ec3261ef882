"""Capture: the teacher's answers, from the request path to the store.

* :mod:`~distillkit.capture.writer`: a bounded queue drained by one background thread (the
  request path never blocks nor does I/O);
* :mod:`~distillkit.capture.sink`: what that thread does with a batch: redact, embed,
  deduplicate, store;
* :mod:`~distillkit.capture.redact`: redactors, such as :func:`~distillkit.capture.redact.pii`.
"""
