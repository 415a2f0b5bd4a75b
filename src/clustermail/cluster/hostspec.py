"""The JSON spec a node agent hands to a virtual server's resource host.

Placeholders in string properties are filled in here, on the node that runs
the virtual server: ``{data}`` (the node's data directory), ``{python}`` (the
interpreter running clustermail), ``{vs}`` and ``{node}``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from clustermail.cluster.config import config_from_dict
from clustermail.cluster.model import Resource


def substitute(value: Any, values: dict[str, str]) -> Any:
    if isinstance(value, str):
        for name, text in values.items():
            value = value.replace("{" + name + "}", text)
        return value
    if isinstance(value, (list, tuple)):
        return [substitute(v, values) for v in value]
    return value


def resource_spec(res: Resource, values: dict[str, str]) -> dict[str, Any]:
    return {
        "name": res.name,
        "type": res.type,
        "properties": {k: substitute(v, values) for k, v in res.properties.items()},
        "depends_on": list(res.depends_on),
        "policy": res.policy.to_dict(),
    }


def host_spec(
    config: dict[str, Any],
    vs: str,
    *,
    node: str,
    epoch: int,
    store_url: str,
    data_dir: Path,
    offline_resources: list[str],
) -> dict[str, Any]:
    model = config_from_dict(config, "the applied configuration")
    server = model.virtual_server(vs)
    if server is None:
        raise KeyError(vs)
    values = {
        "data": str(Path(data_dir).resolve()),
        "python": sys.executable,
        "vs": vs,
        "node": node,
    }
    order = server.online_order()
    resources = [resource_spec(r, values) for name in order if (r := server.resource(name))]
    return {
        "vs": vs,
        "node": node,
        "epoch": epoch,
        "store": store_url,
        "data_dir": values["data"],
        "resources": resources,
        "offline_resources": offline_resources,
    }
