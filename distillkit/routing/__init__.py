"""Routing: may the namespace's distilled model answer this request?

* :mod:`~distillkit.routing.request`: the request as distillkit sees it (query text, task
  fingerprint) and the decision (:class:`~distillkit.routing.request.RouteInfo`);
* :mod:`~distillkit.routing.router`: the decision itself, from the nearest trained neighbours;
* :mod:`~distillkit.routing.embedders`: text to vectors;
* :mod:`~distillkit.routing.calibrate`: a namespace's threshold from its own data;
* :mod:`~distillkit.routing.shadow`: is a distilled model still answering like its teacher?
"""
