"""The operator's web console, served by the gateway at ``/console`` (docs/console.md).

A sub-package of the gateway rather than a role of its own: it reads what the gateway already
holds (the catalogue mirror, the task store, the metrics, the audit trail, the authenticator)
and adds no process. Its modules: ``access`` (who is an operator, sign-in, CSRF),
``registry_client`` (the release verbs, as the CLI sends them), ``live`` (bus events as
server-sent events), ``stats`` (rates from the gateway's metrics), ``pages`` (the routes);
templates and the one small script sit beside them, nothing is fetched at run time.
"""

from gateway.console.access import OPERATOR_SCOPE
from gateway.console.pages import Console, ConsoleParts
from gateway.console.stats import CallRates

__all__ = ["OPERATOR_SCOPE", "CallRates", "Console", "ConsoleParts"]
